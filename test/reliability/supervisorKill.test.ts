import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ipJson } from '../../src/net/ip.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { ECHO_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { createTestDatabase, journalHoles, type TestDatabase } from '../helpers/db.js';
import { until, type UntilOptions } from '../helpers/until.js';

/**
 * Issue 9, supervisor faults: `modemfleet run` with the data plane, SIGKILLed — when idle, in the
 * middle of a rotation, in the middle of a batch of plugs — and started again. Its proxies (own
 * process groups) outlive it; the new run checks them before starting its own (those that are what
 * it would start are adopted, the rest killed: test/e2e/handover.test.ts), so there is exactly
 * one proxy per port, one rule per priority, the same ports per modem, every port egresses from its
 * modem with the address the database shows, and what was interrupted is recorded as such. Each
 * test ends with SIGINT, the full stop (SIGTERM hands the proxies over to a next run).
 */

const N = 3;
let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
const children: ResultPromise[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-restart-'));
  await chmod(dir, 0o711); // as root the proxies run under their own uids and read their configs below it
  net = new NetLab({ name: `mf${randomBytes(2).toString('hex')}`, modems: N });
  await net.start();
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 31).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({
      scan: lab.scan,
      hotplug: 'watch',
      spoolFsync: 'never',
      modem: { probeRetryMs: 100, registrationPollMs: 100, signalPollMs: 1000, backoffBaseMs: 100 },
      dataPlane: {
        netns: net.farm,
        backend: 'microsocks+tinyproxy',
        prefix: 24,
        runDir: join(dir, 'run'),
        egress: { url: net.echoUrl, intervalMs: 2000 },
        // the egress policy (on by default): the lab's internet is the echo server's address
        egressPolicy: { allow: [ECHO_ADDRESS] },
        // the lab's links are veth pairs, not qmi_wwan: nothing to set raw-IP on
        qmiLinks: false,
      },
    }),
  );
}, 60_000);

afterAll(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
  await execa('pkill', ['-KILL', '-f', join(dir, 'run')], { reject: false });
  await lab?.stop();
  await net?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  // a failed test must not leave its daemon fighting the next one for the modems
  for (const c of children.splice(0)) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
  await execa('pkill', ['-KILL', '-f', join(dir, 'run')], { reject: false });
  await net.killInFarm();
  for (let i = 0; i < N; i++) {
    lab.modem(i).setFaults({ slowMs: 0 });
    if (!lab.modem(i).plugged) await lab.plug(i);
  }
});

function daemon(): { child: ResultPromise } {
  const child = execa('node', ['bin/modemfleet.js', 'run', '--config', join(dir, 'config.json')], {
    reject: false,
    env: {
      DATABASE_URL: db.url,
      MODEMFLEET_HOST_ID: 'restart-host',
      MODEMFLEET_STATE_DIR: join(dir, 'state'),
      MODEMFLEET_HTTP: '127.0.0.1:0',
    },
  });
  children.push(child);
  return { child };
}

/** Options of a wait on the farm: a timeout shows the modems and commands as the database has them. */
const waiting = (what: string, timeoutMs: number): UntilOptions => ({
  timeoutMs,
  intervalMs: 200,
  message: async () => {
    const state =
      await db.sql`select m.imei, m.state, m.reason, host(m.wan_ip) as wan_ip, m.seq from modems m order by imei`;
    const commands = await db.sql`select id, imei, kind, status, result from modem_commands order by id`;
    return `${what}: ${JSON.stringify({ state, commands })}`;
  },
});

const modems = () =>
  db.sql<
    {
      imei: string;
      state: string;
      seq: number;
      wan_ip: string;
      socks_port: number;
      http_port: number;
      proxy_user: string;
      proxy_password: string;
      slot: number;
    }[]
  >`
    select m.imei, m.state, m.seq::int, host(m.wan_ip) as wan_ip, a.socks_port, a.http_port, a.proxy_user, a.proxy_password, a.slot
    from modems m join allocations a using (imei) order by m.imei`;

/** Each modem's journal position now (after a kill: what the next run must go past). */
const seqs = async (): Promise<Map<string, number>> =>
  new Map(
    (await db.sql<{ imei: string; seq: number }[]>`select imei, seq::int from modems`).map((m) => [
      m.imei,
      m.seq,
    ]),
  );

/**
 * Every modem brought online by the run started after `atKill` was taken, and serving: the killed
 * run's `online` rows and the proxies it left (which keep serving) would pass `allServing` alone.
 */
async function servingAgain(atKill: Map<string, number>): Promise<boolean> {
  const rows = await modems();
  return rows.every((m) => m.seq > (atKill.get(m.imei) ?? Infinity)) && (await allServing());
}

async function allServing(): Promise<boolean> {
  const rows = await modems();
  if (rows.length !== N || rows.some((m) => m.state !== 'online')) return false;
  for (const m of rows)
    if ((await net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password)) !== m.wan_ip) return false;
  return true;
}

/**
 * This farm's proxy processes: those in its namespace (other lab tests of the same run use the same
 * 100.65.x addresses in namespaces of their own, so an address alone would count theirs too).
 */
const proxyProcesses = async () => {
  const inFarm = new Set(
    String((await execa('ip', ['netns', 'pids', net.farm], { reject: false })).stdout)
      .split('\n')
      .filter(Boolean),
  );
  return String((await execa('pgrep', ['-f', '-a', 'microsocks|tinyproxy'], { reject: false })).stdout)
    .split('\n')
    .filter((l) => inFarm.has(l.split(' ')[0] ?? '') || l.includes(join(dir, 'run')));
};

/**
 * One proxy pair per modem, within seconds: `allServing` probes the SOCKS port only, so the HTTP
 * proxy may still be starting (or a replaced left proxy be missing for a moment).
 */
const pairs = (): Promise<unknown> =>
  until(async () => (await proxyProcesses()).length === 2 * N, {
    timeoutMs: 10_000,
    intervalMs: 200,
    message: async () => `one proxy pair per modem: ${JSON.stringify(await proxyProcesses())}`,
  });

/** What must hold after any restart: same ports, one rule per modem, one proxy pair per modem. */
async function consistent(before: Awaited<ReturnType<typeof modems>>): Promise<void> {
  const after = await modems();
  expect(after.map((m) => [m.imei, m.socks_port, m.http_port])).toEqual(
    before.map((m) => [m.imei, m.socks_port, m.http_port]),
  );
  const [alloc] = await db.sql<{ n: number }[]>`select count(*)::int as n from allocations`;
  expect(alloc?.n).toBe(N);
  const rules = await ipJson<{ priority?: number }>(['rule', 'show'], { netns: net.farm });
  for (const m of after) expect(rules.filter((r) => r.priority === 1000 + 2 * m.slot)).toHaveLength(1);
  // a left proxy the new run replaces (not what it would start) is missing for a moment
  await pairs();
  const holes = await journalHoles(db.sql);
  expect(holes).toEqual([]);
}

async function stop(child: ResultPromise): Promise<void> {
  child.kill('SIGINT');
  expect((await child).exitCode).toBe(0);
  expect(await proxyProcesses()).toEqual([]);
}

describe('modemfleet run with the data plane, killed and started again', () => {
  it('no orphan or duplicate proxy, no duplicate rules, same ports', async () => {
    const { child: first } = daemon();
    await until(allServing, waiting('serving', 40_000));
    const before = await modems();
    await pairs();

    first.kill('SIGKILL');
    await first;
    // its proxies are in their own process groups: they outlive the supervisor
    expect(await proxyProcesses()).toHaveLength(2 * N);

    const { child: second } = daemon();
    await until(
      async () =>
        (await modems()).every((m, i) => m.seq > (before[i]?.seq ?? Infinity)) && (await allServing()),
      waiting('serving again', 40_000),
    );
    await consistent(before);
    await stop(second);
  }, 120_000);

  it('SIGKILL in the middle of a rotation: the command is recorded as interrupted, the address is consistent', async () => {
    const { child: first } = daemon();
    await until(allServing, waiting('serving', 40_000));
    const before = await modems();
    const target = before[0];
    if (!target) throw new Error('no modem');
    const i = lab.modems.findIndex((m) => m.imei === target.imei);
    // every answer of this modem takes 700 ms: the rotation is surely in flight when we kill
    lab.modem(i).setFaults({ slowMs: 700 });
    const [cmd] = await db.sql<{ id: string }[]>`
      insert into modem_commands (imei, kind, requested_by) values (${target.imei}, 'rotate', 'test') returning id`;
    await until(
      async () =>
        (
          await db.sql`select 1 from modem_transitions where imei = ${target.imei} and seq > ${target.seq}
            and to_state like 'online.rotating%'`
        ).length > 0,
      waiting('rotation started', 20_000),
    );
    first.kill('SIGKILL');
    await first;
    const atKill = await seqs();
    lab.modem(i).setFaults({ slowMs: 0 });

    const { child: second } = daemon();
    await until(
      async () => {
        const [c] = await db.sql<
          { status: string }[]
        >`select status from modem_commands where id = ${cmd?.id ?? 0}`;
        return c?.status === 'failed' && (await servingAgain(atKill));
      },
      waiting('serving again, the rotation recorded', 60_000),
    );
    const [c] = await db.sql<{ status: string; result: { error: string } }[]>`
      select status, result from modem_commands where id = ${cmd?.id ?? 0}`;
    expect(c).toMatchObject({ status: 'failed', result: { error: 'interrupted' } });
    // allServing: the address the database shows is the one the modem's port egresses from,
    // whether the data call changed before the kill or not
    await consistent(before);
    await stop(second);
  }, 150_000);

  it('SIGKILL in the middle of a batch of plugs: every modem comes back with its ports', async () => {
    const { child: first } = daemon();
    await until(allServing, waiting('serving', 40_000));
    const before = await modems();
    for (let i = 0; i < N; i++) await lab.unplug(i);
    await until(
      async () =>
        (await modems()).every((m) => m.state === 'removed') && (await proxyProcesses()).length === 0,
      waiting('all removed', 20_000),
    );
    // answers take 100 ms each: bringing the batch online takes a few seconds, the kill lands in it
    for (let i = 0; i < N; i++) lab.modem(i).setFaults({ slowMs: 100 });
    const plugging = Promise.all(lab.modems.map((_, i) => lab.plug(i)));
    // kill as soon as the supervisor has begun on the batch (a modem left `removed`)
    let states: string[] = [];
    await until(
      async () => {
        states = (await modems()).map((m) => m.state);
        return states.some((s) => s !== 'removed');
      },
      waiting('the batch begun', 20_000),
    );
    first.kill('SIGKILL');
    await first;
    const atKill = await seqs();
    await plugging;
    for (let i = 0; i < N; i++) lab.modem(i).setFaults({ slowMs: 0 });
    const onlineAtKill = states.filter((s) => s === 'online').length;
    expect(onlineAtKill).toBeLessThan(N); // the batch was in flight

    const { child: second } = daemon();
    await until(() => servingAgain(atKill), waiting('serving again', 60_000));
    await consistent(before);
    await stop(second);
  }, 150_000);
});
