import { mkdir } from 'node:fs/promises';
import { silentLogger, type Logger } from '../log.js';
import { coerceError } from '../util/errors.js';
import type { SimProfile } from './ec25Model.js';
import { SimModem } from './simModem.js';

export interface SimFarmOptions {
  /** Directory for the tty links (`ttyUSB2`, `ttyUSB6`, ... as a real farm numbers them). */
  dir: string;
  profiles: SimProfile[];
  log?: Logger;
  random?: () => number;
}

/** A set of simulated EC25s, each on its own PTY, controllable from tests and the CLI. */
export class SimFarm {
  readonly modems: SimModem[];

  constructor(private readonly options: SimFarmOptions) {
    this.modems = options.profiles.map(
      (profile, i) =>
        new SimModem({
          profile,
          dir: options.dir,
          // interface 2 of modem i, as the kernel numbers ttyUSB: 4 ports per EC25
          name: `ttyUSB${4 * i + 2}`,
          log: options.log ?? silentLogger,
          ...(options.random ? { random: options.random } : {}),
        }),
    );
  }

  async start(): Promise<void> {
    await mkdir(this.options.dir, { recursive: true });
    try {
      await Promise.all(this.modems.map((m) => m.start()));
    } catch (err) {
      await this.stop();
      throw coerceError(err);
    }
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.modems.map((m) => m.stop()));
  }

  get(imei: string): SimModem {
    const m = this.modems.find((x) => x.imei === imei);
    if (!m) throw new Error(`no simulated modem ${imei}`);
    return m;
  }
}
