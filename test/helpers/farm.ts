import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ModemConfig } from '../../machines/modemTypes.js';
import type { Policy } from '../../src/policy.js';
import { Supervisor, type SupervisorOptions } from '../../src/fleet/supervisor.js';
import { Inspector, type InspectorLimits } from '../../src/inspector/inspector.js';
import { createRootLogger, type Logger } from '../../src/log.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { openSql, type Sql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { TcpProxy } from './tcpProxy.js';
import { until } from './until.js';

export const FAST_MODEM: Partial<ModemConfig> = {
  probeAttempts: 5,
  probeRetryMs: 100,
  registrationPollMs: 100,
  registrationTimeoutMs: 3_000,
  signalPollMs: 500,
  detachMs: 100,
  backoffBaseMs: 100,
  backoffCapMs: 500,
  reenumerationMs: 3_000,
};

export const TOKEN = 'test-token-0123456789abcdef';

/**
 * What test supervisors change of the policy unless a test says otherwise: rotations of one modem
 * may follow each other after 500 ms (production: 30 s), so tests that rotate twice stay quick.
 */
export const TEST_POLICY: Partial<Policy> = { rotationMinIntervalMs: 500 };

/** What every test supervisor over a SimLab shares: the lab's tree and hotplug, fast timings, no fsync. */
export function labSupervisor(
  store: Store,
  lab: SimLab,
  stateDir: string,
  options: Partial<SupervisorOptions> = {},
): SupervisorOptions {
  return {
    store,
    stateDir,
    scan: lab.scan,
    hotplug: lab.hotplug(),
    rescanIntervalMs: 2_000,
    modem: FAST_MODEM,
    spool: { fsync: 'never' },
    ...(process.env['MF_DEBUG'] ? { log: createRootLogger({ level: 'debug' }) } : {}),
    ...options,
    policy: { ...TEST_POLICY, ...options.policy },
  };
}

export interface TestFarm {
  db: TestDatabase;
  /** The supervisor's and inspector's database connection goes through this proxy (cut it). */
  dbProxy: TcpProxy;
  sql: Sql;
  store: Store;
  lab: SimLab;
  supervisor: Supervisor;
  inspector: Inspector;
  url: string;
  dir: string;
  /** fetch with the bearer token. */
  api(path: string, init?: RequestInit): Promise<Response>;
  stop(): Promise<void>;
}

/**
 * A farm for inspector tests: a fresh database, N simulated EC25s, the supervisor and the
 * inspector on a free port, all through a TCP proxy to the database (so a test can cut it).
 */
export async function startFarm(
  options: {
    modems: number;
    seed?: number;
    limits?: Partial<InspectorLimits>;
    hostId?: string;
    log?: Logger;
    /** AT timeouts of the link (default probe 500, query and cfun 2000 ms). */
    timeouts?: { probe: number; query: number; cfun: number };
    /** Runs before the supervisor starts, with the farm's directory (its state dir is `state/`). */
    prepare?: (dir: string) => Promise<void>;
    /** Policy beyond the farm's (the store takes its `rotationScheduleMinSeconds` too). */
    policy?: Partial<Policy>;
    /**
     * Real proxies, as in the demo: the modems get loopback addresses (127.0.1x.y) and this data
     * plane (its options from the farm's directory).
     */
    dataPlane?: (dir: string) => SupervisorOptions['dataPlane'];
  } = {
    modems: 4,
  },
): Promise<TestFarm> {
  const db = await createTestDatabase();
  const dir = await mkdtemp(join(tmpdir(), 'mf-insp-'));
  await chmod(dir, 0o711);
  const dbProxy = new TcpProxy(Number(new URL(db.url).port));
  await dbProxy.start();
  const u = new URL(db.url);
  u.port = String(dbProxy.port);
  const url = u.toString();
  const sql = openSql(url, { max: 6 });
  const log = options.log ?? (process.env['MF_DEBUG'] ? createRootLogger({ level: 'debug' }) : undefined);
  const store = new Store({
    sql,
    url,
    hostId: options.hostId ?? 'host-a',
    ...(options.policy?.rotationScheduleMinSeconds !== undefined
      ? { scheduleMinSeconds: options.policy.rotationScheduleMinSeconds }
      : {}),
    ...(log ? { log } : {}),
  });
  const profiles = defaultProfiles(options.modems, options.seed ?? 3).map((p, i) => ({
    ...p,
    ...(options.dataPlane ? { subnet: `127.0.${10 + i}` } : {}),
    timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
  }));
  const lab = new SimLab({ dir: join(dir, 'lab'), profiles });
  await lab.start();
  await options.prepare?.(dir);
  const supervisor = new Supervisor(
    labSupervisor(store, lab, join(dir, 'state'), {
      link: {
        presencePollMs: 100,
        timeouts: options.timeouts ?? { probe: 500, query: 2_000, cfun: 2_000 },
        addressPollMs: 50,
      },
      policy: { commandPollMs: 1_000, healthFlushMs: 200, ...options.policy },
      proxyHost: '127.0.0.1',
      ...(options.dataPlane ? { dataPlane: options.dataPlane(dir) } : {}),
      ...(log ? { log } : {}),
    }),
  );
  await supervisor.start();
  const inspector = new Inspector({
    store,
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    supervisor,
    listenHeartbeatIntervalMs: 500,
    listenHeartbeatTimeoutMs: 2_000,
    ...(options.limits ? { limits: options.limits } : {}),
    ...(log ? { log } : {}),
  });
  await inspector.start();
  const base = inspector.url;
  return {
    db,
    dbProxy,
    sql,
    store,
    lab,
    supervisor,
    inspector,
    url: base,
    dir,
    api: (path, init = {}) =>
      fetch(`${base}${path}`, {
        ...init,
        headers: {
          authorization: `Bearer ${TOKEN}`,
          ...(init.body ? { 'content-type': 'application/json' } : {}),
          ...(init.headers as Record<string, string> | undefined),
        },
      }),
    async stop() {
      dbProxy.up();
      await inspector.stop().catch(() => undefined);
      await supervisor.stop().catch(() => undefined);
      await lab.stop();
      await sql.end({ timeout: 1 });
      await dbProxy.stop();
      await db.drop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Tests that wait on a farm have always imported `until` from here: it is test/helpers/until.ts. */
export { until };

export async function onlineCount(farm: TestFarm): Promise<number> {
  const rows = await farm.db.sql<
    { n: number }[]
  >`select count(*)::int as n from modems where state = 'online'`;
  return rows[0]?.n ?? 0;
}

/** Insert a command by SQL, as an operator would, and wait until it is finished. */
export async function runCommand(
  farm: TestFarm,
  imei: string,
  kind: 'rotate' | 'reset' | 'disable' | 'enable',
  ms = 30_000,
): Promise<{ id: number; status: string; result: Record<string, unknown> }> {
  const [row] = await farm.db.sql<{ id: string }[]>`
    insert into modem_commands (imei, kind, requested_by) values (${imei}, ${kind}, 'test') returning id`;
  const id = Number(row?.id);
  let done: { status: string; result: Record<string, unknown> } | undefined;
  await until(
    async () => {
      const [c] = await farm.db.sql<{ status: string; result: Record<string, unknown> }[]>`
        select status, result from modem_commands where id = ${id}`;
      if (c && (c.status === 'done' || c.status === 'failed')) done = c;
      return done !== undefined;
    },
    ms,
    `command ${kind} ${id} finished`,
  );
  return { id, ...(done as { status: string; result: Record<string, unknown> }) };
}

export async function modemRow(
  farm: TestFarm,
  imei: string,
): Promise<{ state: string; reason: string | null; wan_ip: string | null } | undefined> {
  const [row] = await farm.db.sql<{ state: string; reason: string | null; wan_ip: string | null }[]>`
    select state, reason, host(wan_ip) as wan_ip from modems where imei = ${imei}`;
  return row;
}

/**
 * Journal load without the database: every `everyMs` one plugged modem (in turn) says `RDY`, as
 * an EC25 does after it reset itself; an online modem then goes through detecting, initializing
 * and online again, about six journal rows. (Signal polls are activity and journal nothing.)
 * Returns the function that stops it.
 */
export function selfResets(lab: SimLab, everyMs: number): () => Promise<void> {
  let stopped = false;
  const done = (async () => {
    for (let i = 0; !stopped; i++) {
      const modem = lab.modems[i % lab.modems.length];
      try {
        modem?.inject('\r\nRDY\r\n');
      } catch {
        // unplugged meanwhile
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return async () => {
    stopped = true;
    await done;
  };
}
