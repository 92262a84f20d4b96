import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from '../log.js';
import { ConfigError } from '../util/errors.js';
import { shutdownSignal } from '../util/signals.js';
import { defaultProfiles, parseProfiles, type TimingName } from './profiles.js';
import { SimFarm } from './simFarm.js';

/**
 * `modemfleet sim`: start N simulated modems, print one JSON line each, serve until SIGINT/SIGTERM,
 * then unplug them all. The tty links live in `dir` (default: a fresh directory under the system's
 * temporary directory, removed on exit).
 */
export async function runSim(options: {
  modems: number;
  profileFile?: string | undefined;
  dir?: string | undefined;
  /** Simulated timings: `fast` (default) or `realistic` (seconds, as in the field). */
  timing?: TimingName | undefined;
  log: Logger;
}): Promise<void> {
  const timing = { timing: options.timing ?? 'fast' } as const;
  let profiles = defaultProfiles(options.modems, 1, timing);
  if (options.profileFile) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(await readFile(options.profileFile, 'utf8'));
    } catch (err) {
      throw new ConfigError([`${options.profileFile}: ${(err as Error).message}`]);
    }
    profiles = parseProfiles(parsed, 1, timing);
  }
  const own = options.dir === undefined;
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'modemfleet-sim-')));
  await mkdir(dir, { recursive: true });
  const farm = new SimFarm({ dir, profiles, log: options.log });
  const signal = shutdownSignal(options.log);
  try {
    await farm.start();
  } catch (err) {
    signal.dispose();
    if (own) await rm(dir, { recursive: true, force: true });
    throw err;
  }
  for (const m of farm.modems) {
    process.stdout.write(
      `${JSON.stringify({ imei: m.imei, atPort: m.atPort, iccid: m.model.profile.iccid, operator: m.model.profile.operator })}\n`,
    );
  }
  await signal.received;
  await farm.stop();
  if (own) await rm(dir, { recursive: true, force: true });
  signal.dispose();
}
