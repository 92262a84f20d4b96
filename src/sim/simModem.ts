import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { silentLogger, type Logger } from '../log.js';
import { ModemfleetError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { sleep } from '../util/time.js';
import { Ec25Model, type SimFaults, type SimProfile } from './ec25Model.js';

export interface SimModemOptions {
  profile: SimProfile;
  /** Directory of the tty links. */
  dir: string;
  /** File name of this modem's AT port link in `dir`, e.g. `ttyUSB2`. */
  name: string;
  log?: Logger;
  random?: () => number;
}

const MAX_INPUT = 1024;

/**
 * A simulated EC25 on a real PTY: `socat PTY,link=<dir>/<name>,raw,echo=0 STDIO` gives a tty the
 * supervisor opens with serialport exactly like a ttyUSB, and its other end is socat's stdin/stdout,
 * which the model drives. Unplug kills socat (the tty path goes away); a reset unplugs, waits,
 * plugs the same path back and sends RDY.
 */
export class SimModem {
  readonly model: Ec25Model;
  private child: ResultPromise | undefined;
  private input = '';
  private writing: Promise<void> = Promise.resolve();
  private regTimer: NodeJS.Timeout | undefined;
  private lastStat = -1;
  private generation = 0;
  private enumerated = 0;
  private readonly log: Logger;

  constructor(private readonly options: SimModemOptions) {
    this.model = new Ec25Model(options.profile, Date.now, options.random ?? Math.random);
    this.log = (options.log ?? silentLogger).child({ component: 'sim', modem: options.profile.imei });
  }

  get imei(): string {
    return this.options.profile.imei;
  }

  get atPort(): string {
    return join(this.options.dir, this.options.name);
  }

  get plugged(): boolean {
    return this.child !== undefined;
  }

  /** How many times the tty appeared (1 after start, +1 per re-enumeration or replug). */
  get enumerations(): number {
    return this.enumerated;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  setFaults(faults: Partial<SimFaults>): void {
    Object.assign(this.options.profile.faults, faults);
  }

  /** Plug in: the tty appears, then after the boot time RDY and the boot URCs. */
  async start(): Promise<void> {
    if (this.child) return;
    const generation = ++this.generation;
    this.model.powerOn();
    this.input = '';
    await rm(this.atPort, { force: true });
    const child = execa('socat', ['-d', '-d', `PTY,link=${this.atPort},raw,echo=0`, 'STDIO'], {
      reject: false,
      buffer: false,
      stdin: 'pipe',
      stdout: 'pipe',
      stderr: 'ignore',
      cleanup: true,
    });
    this.child = child;
    child.stdout?.on('data', (chunk: Buffer) => this.onInput(chunk));
    child.stdin?.on('error', () => undefined);
    void child.then(() => {
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + 5_000;
    while (!(await pathExists(this.atPort))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await this.stop();
        throw new ModemfleetError('sim_pty_failed', `socat did not create ${this.atPort}`);
      }
      await sleep(10);
    }
    this.enumerated++;
    setTimeout(() => {
      if (this.generation === generation && this.child === child && !this.model.faults.hang)
        this.write(this.model.bootText());
    }, this.options.profile.timings.bootMs).unref();
    this.lastStat = -1;
    this.regTimer = setInterval(() => this.registrationUrc(), 200);
    this.regTimer.unref();
  }

  /** Unplug: the tty disappears. */
  async stop(): Promise<void> {
    this.generation++;
    clearInterval(this.regTimer);
    const child = this.child;
    this.child = undefined;
    if (!child) return;
    child.kill('SIGTERM');
    await child;
    // socat removes its link on SIGTERM; make sure of it (a dangling link would look plugged)
    await rm(this.atPort, { force: true });
  }

  unplug(): Promise<void> {
    return this.stop();
  }

  /** AT+CFUN=1,1 or a USB reset: gone for `resetMs`, then back at the same path with RDY. */
  async reenumerate(): Promise<void> {
    await this.stop();
    const generation = this.generation;
    await sleep(this.options.profile.timings.resetMs);
    // unplugged (or restarted) meanwhile: a reset does not bring back a modem that was pulled out
    if (this.generation !== generation || this.child) return;
    await this.start();
  }

  private write(text: string): void {
    const child = this.child;
    if (!child || text.length === 0) return;
    this.writing = this.writing.then(
      () =>
        new Promise<void>((resolve) => {
          if (!child.stdin || child.stdin.destroyed) return resolve();
          child.stdin.write(Buffer.from(text, 'latin1'), () => resolve());
        }),
    );
  }

  private onInput(chunk: Buffer): void {
    this.input += chunk.toString('latin1');
    if (this.input.length > MAX_INPUT) this.input = this.input.slice(-MAX_INPUT);
    let cr: number;
    while ((cr = this.input.indexOf('\r')) >= 0) {
      const command = this.input.slice(0, cr).replace(/\n/g, '').trim();
      this.input = this.input.slice(cr + 1);
      if (command) this.respond(command);
    }
  }

  private respond(command: string): void {
    const answer = this.model.handle(command);
    const generation = this.generation;
    const send = (): void => {
      if (this.generation !== generation) return;
      this.write(answer.text);
      if (answer.reset) {
        // the OK goes out, then USB drops and comes back
        setTimeout(() => {
          if (this.generation === generation)
            void this.reenumerate().catch((err: unknown) => this.log.warn({ err }, 'sim reset failed'));
        }, 50);
      }
    };
    if (answer.delayMs > 0) setTimeout(send, answer.delayMs);
    else send();
  }

  private registrationUrc(): void {
    const stat = this.model.registrationStat();
    if (stat === this.lastStat) return;
    this.lastStat = stat;
    if (this.model.faults.hang) return;
    if (this.model.cregMode > 0) this.write(`\r\n+CREG: ${stat}\r\n`);
    if (this.model.ceregMode > 0) this.write(`\r\n+CEREG: ${stat}\r\n`);
  }
}
