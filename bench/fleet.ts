import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULT_MODEM_CONFIG } from '../machines/modemTypes.js';
import { stateName } from '../src/fleet/modemRuntime.js';
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

export interface JournalRowFigures {
  modems: number;
  seconds: number;
  /** Journal rows per online modem per hour at the default signal poll (30 s): before (every state change) and after the rule. */
  idleRowsPerModemHourBefore: number;
  idleRowsPerModemHourAfter: number;
  /** The same for a modem searching for a network, at the default registration poll (2 s). */
  searchingRowsPerModemHourBefore: number;
  searchingRowsPerModemHourAfter: number;
  targetMet: boolean;
}

/**
 * Journal rows of modems that do nothing: online ones polling their signal, and searching ones
 * polling their registration, with polls 100x faster than the defaults so that a short window
 * holds many. "Before" counts every change of the machine's state value (what the journal wrote
 * before the lifecycle rule), "after" the rows handed to the journal; both per poll, scaled to an
 * hour at the default intervals.
 */
export async function journalRows(
  sql: Sql,
  url: string,
  modems: number,
  seconds: number,
): Promise<JournalRowFigures> {
  const signalPollMs = DEFAULT_MODEM_CONFIG.signalPollMs / 100;
  const registrationPollMs = DEFAULT_MODEM_CONFIG.registrationPollMs / 100;
  const farm = await startFarm(sql, url, modems, {
    modem: { signalPollMs, registrationPollMs, registrationTimeoutMs: 3_600_000, probeRetryMs: 50 },
  });
  const searching = new Set<string>();
  for (let i = 0; i < modems; i += 2) {
    farm.lab.modem(i).model.profile.faults.registration = 'searching';
    searching.add(farm.lab.usbPath(i));
  }
  try {
    await farm.lab.start();
    await farm.supervisor.start();
    const settled = (): boolean =>
      [...farm.supervisor.modems.values()].every((m) =>
        searching.has(m.usbPath) ? m.snapshot().matches({ initializing: 'registering' }) : m.top === 'online',
      ) && farm.supervisor.modems.size === modems;
    const deadline = Date.now() + 60_000;
    while (!settled()) {
      if (Date.now() > deadline) throw new Error('the farm did not settle');
      await sleep(50);
    }
    await sleep(1_000);
    const changes = new Map<string, number>();
    const rows = new Map<string, number>();
    const stops = [...farm.supervisor.modems.values()].map((m) => {
      let last = stateName(m.snapshot().value);
      return m.runtime.actor.subscribe((s) => {
        const now = stateName(s.value);
        if (now !== last) changes.set(m.usbPath, (changes.get(m.usbPath) ?? 0) + 1);
        last = now;
      });
    });
    const place = new Map([...farm.supervisor.modems.values()].map((m) => [m.imei, m.usbPath]));
    const off = farm.supervisor.events.on('transition', (r) => {
      const at = place.get(r.imei);
      if (at) rows.set(at, (rows.get(at) ?? 0) + 1);
    });
    const t0 = performance.now();
    await sleep(seconds * 1000);
    const elapsedH = (performance.now() - t0) / 3_600_000;
    off();
    stops.forEach((s) => s.unsubscribe());
    const perHour = (counts: Map<string, number>, which: boolean): number => {
      const group = [...farm.supervisor.modems.values()].filter((m) => searching.has(m.usbPath) === which);
      const total = group.reduce((n, m) => n + (counts.get(m.usbPath) ?? 0), 0);
      // the polls ran 100x faster than the defaults: an hour at the defaults holds 1/100 as many
      return Number((total / group.length / elapsedH / 100).toFixed(1));
    };
    const figures = {
      modems,
      seconds,
      idleRowsPerModemHourBefore: perHour(changes, false),
      idleRowsPerModemHourAfter: perHour(rows, false),
      searchingRowsPerModemHourBefore: perHour(changes, true),
      searchingRowsPerModemHourAfter: perHour(rows, true),
    };
    return { ...figures, targetMet: figures.idleRowsPerModemHourAfter === 0 };
  } finally {
    await farm.stop();
  }
}
