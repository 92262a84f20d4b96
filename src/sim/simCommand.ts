import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { ConfigError } from '../util/errors.js';
import { defaultProfiles, parseProfiles } from './profiles.js';
import { SimFarm } from './simFarm.js';

/** `modemfleet sim`: start N simulated modems, print one JSON line each, serve until a signal. */
export async function runSim(options: {
  modems: number;
  profileFile?: string;
  dir: string;
  log: Logger;
}): Promise<void> {
  let profiles = defaultProfiles(options.modems);
  if (options.profileFile) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(options.profileFile, 'utf8'));
    } catch (err) {
      throw new ConfigError([`${options.profileFile}: ${(err as Error).message}`]);
    }
    profiles = parseProfiles(parsed);
  }
  const farm = new SimFarm({ dir: join(options.dir, 'tty'), profiles, log: options.log });
  await farm.start();
  for (const m of farm.modems) {
    process.stdout.write(
      `${JSON.stringify({ imei: m.imei, atPort: m.atPort, iccid: m.model.profile.iccid, operator: m.model.profile.operator })}\n`,
    );
  }
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  await farm.stop();
}
