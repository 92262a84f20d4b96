// One host of the farm benchmark (bench/farm.ts), in a process of its own:
//   node --import tsx bench/farmHost.ts   (forked with an IPC channel; its settings in MF_FARM_HOST)
// M in-process simulated EC25s (memory wire) and one Supervisor with its own pool, as a daemon runs.
// IPC: the parent sends { type: 'unplug' | 'replug', i }, { type: 'cpu' } and { type: 'stop' };
// the host answers { type: 'started' }, { type: 'cpu', userUs, systemUs, atMs } and { type: 'stopped' }.
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Supervisor } from '../src/fleet/supervisor.js';
import { defaultProfiles } from '../src/sim/profiles.js';
import { SimLab } from '../src/sim/simLab.js';
import { openSql } from '../src/store/database.js';
import { Store } from '../src/store/store.js';

export interface FarmHostSettings {
  url: string;
  hostId: string;
  modems: number;
  /** Distinct per host: IMEIs and ICCIDs follow it (defaultProfiles). */
  seed: number;
  /** The host's pool size (policy.databasePoolMax in a daemon). */
  poolMax: number;
  signalPollMs: number;
}

export type FarmHostRequest = { type: 'unplug' | 'replug'; i: number } | { type: 'cpu' } | { type: 'stop' };
export type FarmHostReply =
  | { type: 'started' }
  | { type: 'cpu'; userUs: number; systemUs: number; atMs: number }
  | { type: 'stopped' }
  | { type: 'failed'; message: string };

const FAST = { bootMs: 0, latencyMs: 0, attachMs: 0, resetMs: 100 };

async function main(): Promise<void> {
  const s = JSON.parse(process.env['MF_FARM_HOST'] ?? '{}') as FarmHostSettings;
  const send = (m: FarmHostReply): void => void process.send?.(m);
  const dir = await mkdtemp(join(tmpdir(), `mf-farm-${s.hostId}-`));
  await chmod(dir, 0o711);
  const sql = openSql(s.url, { max: s.poolMax, application: `modemfleet-${s.hostId}` });
  const store = new Store({ sql, url: s.url, hostId: s.hostId });
  const profiles = defaultProfiles(s.modems, s.seed).map((p) => ({ ...p, timings: FAST }));
  const lab = new SimLab({ dir: join(dir, 'lab'), profiles, wire: 'memory' });
  const supervisor = new Supervisor({
    store,
    stateDir: join(dir, 'state'),
    scan: lab.scan,
    hotplug: lab.hotplug(),
    modem: { registrationPollMs: 50, signalPollMs: s.signalPollMs, probeRetryMs: 50, detachMs: 100 },
    link: { ...(lab.openPort ? { openPort: lab.openPort } : {}), presencePollMs: 1_000, addressPollMs: 20 },
    spool: { fsync: 'never' },
    policy: { healthFlushMs: 1_000, rotationMinIntervalMs: 1_000 },
  });
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await supervisor.stop().catch(() => undefined);
      await lab.stop().catch(() => undefined);
      await sql.end().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
      send({ type: 'stopped' });
      process.disconnect?.();
    })());
  process.on('message', (m: FarmHostRequest) => {
    if (m.type === 'cpu') {
      const c = process.cpuUsage();
      send({ type: 'cpu', userUs: c.user, systemUs: c.system, atMs: performance.now() });
    } else if (m.type === 'unplug') void lab.unplug(m.i).catch(() => undefined);
    else if (m.type === 'replug') void lab.plug(m.i).catch(() => undefined);
    else if (m.type === 'stop') void stop();
  });
  // the coordinator going away takes the host with it
  process.on('disconnect', () => void stop());
  await lab.start();
  await supervisor.start();
  send({ type: 'started' });
}

main().catch((err: unknown) => {
  process.send?.({ type: 'failed', message: String(err) } satisfies FarmHostReply);
  process.exitCode = 1;
});
