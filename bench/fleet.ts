import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Supervisor, type SupervisorOptions } from '../src/fleet/supervisor.js';
import { defaultProfiles } from '../src/sim/profiles.js';
import { SimLab } from '../src/sim/simLab.js';
import type { Sql } from '../src/store/database.js';
import { Store } from '../src/store/store.js';
import { sleep } from '../src/util/time.js';

/**
 * Fleet figures with in-process simulated modems (zero latency: no PTYs, no socat processes), so
 * what is measured is our own overhead: detection, actors, AT framing, journal, allocation.
 * The simulator runs in the same process: its CPU is included (an upper bound for ours).
 */

export interface BootFigures {
  modems: number;
  /** Supervisor start to every modem `online` in the database. */
  wallMs: number;
  cpuMsPerModem: number;
  heapKiBPerModem: number;
  rssKiBPerModem: number;
  /** The limit it is measured against: 10 s for 1,000 modems, 200 KiB RSS per modem. */
  targetMet: boolean;
}

export interface FarmHandle {
  lab: SimLab;
  supervisor: Supervisor;
  store: Store;
  /** Stops the supervisor only (once); the simulated modems stay. */
  stopSupervisor(): Promise<void>;
  stop(): Promise<void>;
}

const FAST = { bootMs: 0, latencyMs: 0, attachMs: 0, resetMs: 100 };

export async function startFarm(
  sql: Sql,
  url: string,
  modems: number,
  extra: Partial<SupervisorOptions> = {},
  profile: (i: number) => Partial<ReturnType<typeof defaultProfiles>[number]> = () => ({}),
): Promise<FarmHandle> {
  const dir = await mkdtemp(join(tmpdir(), 'mf-bench-farm-'));
  await chmod(dir, 0o711);
  const profiles = defaultProfiles(modems, 17).map((p, i) => ({ ...p, timings: FAST, ...profile(i) }));
  const lab = new SimLab({ dir: join(dir, 'lab'), profiles, wire: 'memory' });
  const store = new Store({ sql, url, hostId: `bench-${modems}` });
  const supervisor = new Supervisor({
    store,
    stateDir: join(dir, 'state'),
    scan: lab.scan,
    hotplug: lab.hotplug(),
    modem: { registrationPollMs: 50, signalPollMs: 30_000, probeRetryMs: 50, detachMs: 100 },
    link: { ...(lab.openPort ? { openPort: lab.openPort } : {}), presencePollMs: 1_000, addressPollMs: 20 },
    spool: { fsync: 'never' },
    policy: { healthFlushMs: 1_000 },
    ...extra,
  });
  let supervisorStop: Promise<void> | undefined;
  const stopSupervisor = (): Promise<void> => (supervisorStop ??= supervisor.stop());
  return {
    lab,
    supervisor,
    store,
    stopSupervisor,
    async stop() {
      await stopSupervisor();
      await lab.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function onlineCount(sql: Sql, hostId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n from modems where host_id = ${hostId} and state = 'online'`;
  return row?.n ?? 0;
}

export async function fleetBoot(sql: Sql, url: string, modems: number): Promise<BootFigures> {
  const farm = await startFarm(sql, url, modems);
  try {
    await farm.lab.start();
    global.gc?.();
    await sleep(200);
    const heap0 = process.memoryUsage().heapUsed;
    const rss0 = process.memoryUsage().rss;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await farm.supervisor.start();
    const deadline = Date.now() + 120_000;
    while ((await onlineCount(sql, `bench-${modems}`)) < modems) {
      if (Date.now() > deadline)
        throw new Error(`only ${await onlineCount(sql, `bench-${modems}`)} of ${modems} online`);
      await sleep(25);
    }
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    global.gc?.();
    await sleep(200);
    const heap = process.memoryUsage().heapUsed - heap0;
    const rss = process.memoryUsage().rss - rss0;
    const figures = {
      modems,
      wallMs: Math.round(wallMs),
      cpuMsPerModem: Number(((cpu.user + cpu.system) / 1000 / modems).toFixed(2)),
      heapKiBPerModem: Math.round(heap / 1024 / modems),
      rssKiBPerModem: Math.round(rss / 1024 / modems),
    };
    return {
      ...figures,
      targetMet: figures.rssKiBPerModem < 200 && (modems < 1000 || figures.wallMs < 10_000),
    };
  } finally {
    await farm.stop();
  }
}

export interface IdleFigures {
  modems: number;
  seconds: number;
  /** The whole process with the farm online, as a share of one core. */
  totalShareOfCore: number;
  /** The same process before anything started (node, the database pool): its floor. */
  floorShareOfCore: number;
  /** The in-process simulated modems alone, after the supervisor was stopped. */
  simulatorShareOfCore: number;
  /** total − simulator: what the supervisor costs. */
  supervisorShareOfCore: number;
  targetMet: boolean;
}

export async function idleCost(sql: Sql, url: string, modems: number, seconds: number): Promise<IdleFigures> {
  const share = async (): Promise<number> => {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const cpu = process.cpuUsage(cpu0);
    return (cpu.user + cpu.system) / 1000 / (performance.now() - t0);
  };
  const floor = await share();
  const farm = await startFarm(sql, url, modems);
  try {
    await farm.lab.start();
    await farm.supervisor.start();
    while ((await onlineCount(sql, `bench-${modems}`)) < modems) await sleep(50);
    // the boot's journal and health writes, V8's background compilation and GC settle first
    await sleep(Math.min(10, seconds) * 1000);
    const total = await share();
    // the simulator alone, in the same steady state: the supervisor stopped, the modems still up
    await farm.stopSupervisor();
    await sleep(Math.min(5, seconds) * 1000);
    const simulator = await share();
    const supervisor = Math.max(0, total - simulator);
    const round = (x: number) => Number(x.toFixed(4));
    return {
      modems,
      seconds,
      totalShareOfCore: round(total),
      floorShareOfCore: round(floor),
      simulatorShareOfCore: round(simulator),
      supervisorShareOfCore: round(supervisor),
      targetMet: supervisor < 0.01,
    };
  } finally {
    await farm.stop();
  }
}
