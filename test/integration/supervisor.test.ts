import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { openSql, type Sql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import type { AllocationRanges, TransitionRecord } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { FAST_MODEM, labSupervisor } from '../helpers/farm.js';
import { TcpProxy } from '../helpers/tcpProxy.js';

const MODEM = FAST_MODEM;

let db: TestDatabase;
let dir: string;
let labs: SimLab[] = [];
let supervisors: Supervisor[] = [];
let extraSql: Sql[] = [];

beforeEach(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-sup-'));
});
afterEach(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined);
  await Promise.all(labs.map((l) => l.stop()));
  for (const s of extraSql) await s.end({ timeout: 1 });
  supervisors = [];
  labs = [];
  extraSql = [];
  await db.drop();
  await rm(dir, { recursive: true, force: true });
  const left = await execa('pgrep', ['-f', `socat.*${dir}`], { reject: false });
  expect(left.stdout).toBe('');
});

async function lab(n: number, name = 'lab', seed = 1): Promise<SimLab> {
  const profiles = defaultProfiles(n, seed).map((p) => ({
    ...p,
    timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
  }));
  const l = new SimLab({ dir: join(dir, name), profiles });
  labs.push(l);
  await l.start();
  return l;
}

function supervisor(
  l: SimLab,
  options: {
    hostId?: string;
    url?: string;
    stateDir?: string;
    journal?: TransitionRecord[];
    ranges?: AllocationRanges;
  } = {},
) {
  const url = options.url ?? db.url;
  const sql = url === db.url ? db.sql : openSql(url, { max: 4 });
  if (sql !== db.sql) extraSql.push(sql);
  const store = new Store({
    sql,
    url,
    hostId: options.hostId ?? 'host-a',
    ...(options.ranges ? { ranges: options.ranges } : {}),
  });
  const s = new Supervisor(
    labSupervisor(store, l, options.stateDir ?? join(dir, `state-${options.hostId ?? 'host-a'}`), {
      modem: MODEM,
      link: { presencePollMs: 100, timeouts: { probe: 500, query: 2_000, cfun: 2_000 }, addressPollMs: 50 },
      policy: { commandPollMs: 1_000, healthFlushMs: 200 },
    }),
  );
  s.events.on('transition', (r) => options.journal?.push(r));
  supervisors.push(s);
  return s;
}

async function until(
  check: () => Promise<boolean> | boolean,
  ms = 20_000,
  what = 'condition',
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) {
      if (process.env['MF_DEBUG'])
        console.log(
          await db.sql`select imei, seq, from_state, to_state, event from modem_transitions order by imei, seq`,
        );
      throw new Error(`timed out waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

const states = async (hostId = 'host-a') =>
  db.sql<{ imei: string; state: string; seq: number; desired_state: string }[]>`
    select imei, state, seq, desired_state from modems where host_id = ${hostId} order by imei`;

async function allIn(state: string, n: number, hostId = 'host-a'): Promise<boolean> {
  const rows = await states(hostId);
  return rows.length === n && rows.every((r) => r.state === state);
}

/** The journal of every modem is 1..seq without a hole, and the modems row is at its end. */
async function expectContiguousJournal(): Promise<void> {
  const rows = await db.sql<{ imei: string; n: number; max: number; seq: number; last: string }[]>`
    select m.imei, count(t.seq)::int as n, coalesce(max(t.seq), 0)::int as max, m.seq::int as seq,
           (select to_state from modem_transitions x where x.imei = m.imei order by seq desc limit 1) as last
    from modems m left join modem_transitions t on t.imei = m.imei group by m.imei`;
  for (const r of rows) {
    expect({ imei: r.imei, n: r.n, max: r.max }).toEqual({ imei: r.imei, n: r.seq, max: r.seq });
  }
}

const allocations = async () =>
  db.sql<{ imei: string; http_port: number; socks_port: number; routing_table: number }[]>`
    select imei, http_port, socks_port, routing_table from allocations order by imei`;

describe('fleet supervisor with the simulator and a real PostgreSQL', () => {
  it('20 modems plugged → all online, journal contiguous, allocations unique; 5 unplugged and replugged keep their ports', async () => {
    const l = await lab(20);
    const s = supervisor(l);
    await s.start();
    await until(() => allIn('online', 20), 40_000, '20 online');
    // ports are allocated once the IMEI is confirmed, which can be a moment after online
    await until(async () => (await allocations()).length === 20, 10_000, '20 allocations');
    await s.journal.flush();
    await expectContiguousJournal();
    const before = await allocations();
    expect(before).toHaveLength(20);
    for (const key of ['http_port', 'socks_port', 'routing_table'] as const)
      expect(new Set(before.map((a) => a[key])).size).toBe(20);
    const [first] = await db.sql<{ to_state: string; from_state: string | null; event: string }[]>`
      select to_state, from_state, event from modem_transitions where seq = 1 limit 1`;
    expect(first).toEqual({ to_state: 'detecting.probing', from_state: null, event: 'xstate.init' });

    const gone = [0, 3, 7, 11, 19];
    await Promise.all(gone.map((i) => l.unplug(i)));
    const goneImeis = gone.map((i) => l.modem(i).imei);
    await until(
      async () =>
        (await states()).filter((r) => goneImeis.includes(r.imei) && r.state === 'removed').length === 5,
      10_000,
      '5 removed',
    );
    expect(s.modems.size).toBe(15);
    await Promise.all(gone.map((i) => l.plug(i)));
    await until(() => allIn('online', 20), 30_000, 'replugged online');
    expect(await allocations()).toEqual(before);
    await s.journal.flush();
    await expectContiguousJournal();
  }, 120_000);

  it('commands from SQL: rotate changes the address, disable survives a restart, enable brings it back', async () => {
    const l = await lab(3);
    const s = supervisor(l);
    await s.start();
    await until(() => allIn('online', 3), 20_000, 'online');
    const imei = l.modem(1).imei;
    const [{ wan_ip: before } = { wan_ip: '' }] = await db.sql<{ wan_ip: string }[]>`
      select host(wan_ip) as wan_ip from modems where imei = ${imei}`;
    const [{ id } = { id: 0 }] = await db.sql<{ id: number }[]>`
      insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'sql') returning id`;
    await until(
      async () =>
        (await db.sql`select 1 from modem_commands where id = ${id} and status = 'done'`).length === 1,
      15_000,
      'rotation done',
    );
    const [cmd] = await db.sql<{ result: { previousIp: string; wanIp: string } }[]>`
      select result from modem_commands where id = ${id}`;
    expect(cmd?.result.previousIp).toBe(before);
    expect(cmd?.result.wanIp).not.toBe(before);
    expect(cmd?.result.wanIp).toBe(l.modem(1).model.address);

    await db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'disable', 'sql')`;
    await until(
      async () => (await states()).find((r) => r.imei === imei)?.state === 'disabled',
      15_000,
      'disabled',
    );
    expect((await states()).find((r) => r.imei === imei)?.desired_state).toBe('disabled');
    expect(l.modem(1).model.cfun).toBe(4);

    // a command for an unknown modem fails cleanly; one for another host's modem is left alone
    await db.sql`insert into hosts (id, name) values ('host-z', 'host-z')`;
    await db.sql`insert into modems (imei, host_id) values ('356000000000042', 'host-z')`;
    const [{ id: foreign } = { id: 0 }] = await db.sql<{ id: number }[]>`
      insert into modem_commands (imei, kind, requested_by) values ('356000000000042', 'reset', 'sql') returning id`;

    await s.stop();
    const again = supervisor(l);
    await again.start();
    await until(
      async () => {
        const rows = await states();
        return (
          rows.filter((r) => r.state === 'online').length === 2 && rows.some((r) => r.state === 'disabled')
        );
      },
      20_000,
      'same farm after restart',
    );
    await new Promise((r) => setTimeout(r, 500));
    expect((await states()).find((r) => r.imei === imei)?.state).toBe('disabled');

    await db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'enable', 'sql')`;
    await until(() => allIn('online', 3), 20_000, 'enabled');
    const [f] = await db.sql<{ status: string }[]>`select status from modem_commands where id = ${foreign}`;
    expect(f?.status).toBe('pending');
    await again.journal.flush();
    await expectContiguousJournal();
  }, 90_000);

  it('PostgreSQL away during churn: the journal ends up equal to the transitions, none lost or duplicated', async () => {
    const pg = new URL(db.url);
    const proxy = new TcpProxy(Number(pg.port));
    await proxy.start();
    const url = db.url.replace(`:${pg.port}/`, `:${proxy.port}/`);
    const l = await lab(6);
    const made: TransitionRecord[] = [];
    const s = supervisor(l, { url, journal: made });
    await s.start();
    await until(() => allIn('online', 6), 20_000, 'online');
    proxy.cut();
    // churn while the database is away: unplug, fault, replug
    await l.unplug(0);
    l.modem(1).setFaults({ dataCallRefused: true });
    await l.unplug(2);
    await new Promise((r) => setTimeout(r, 4_000));
    await l.plug(0);
    l.modem(1).setFaults({ dataCallRefused: false });
    await new Promise((r) => setTimeout(r, 6_000)); // 10 s without the database
    expect(s.journal.stats.spooled).toBeGreaterThan(0);
    proxy.up();
    await until(
      async () => {
        const rows = await states();
        return (
          rows.filter((r) => r.state === 'online').length === 5 && rows.some((r) => r.state === 'removed')
        );
      },
      30_000,
      'recovered',
    );
    await s.journal.flush();
    await until(() => s.journal.stats.mode === 'direct', 10_000, 'spool drained');
    // modems keep journaling their signal polls: stop the supervisor (it flushes the journal) so
    // that every record made, the last ones included, can be compared
    await s.stop();
    await expectContiguousJournal();
    // the journal is exactly what the actors went through: every record, none twice, none extra
    const stored = await db.sql<{ imei: string; seq: number; to_state: string; event: string }[]>`
      select imei, seq::int, to_state, event from modem_transitions order by imei, seq`;
    const key = (r: { imei: string; seq: number; to: string; event: string }) =>
      `${r.imei}#${r.seq}:${r.to}:${r.event}`;
    expect(stored.map((r) => key({ ...r, to: r.to_state })).sort()).toEqual(made.map(key).sort());
    const [dupes] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from (select imei, seq from modem_transitions group by 1, 2 having count(*) > 1) d`;
    expect(dupes?.n).toBe(0);
    await proxy.stop();
  }, 90_000);

  it('a new SIM under a known IMEI raises a sim_swap alert; health samples reach modem_health', async () => {
    const l = await lab(2);
    const s = supervisor(l);
    await s.start();
    await until(() => allIn('online', 2), 20_000, 'online');
    await until(async () => (await db.sql`select 1 from modem_health`).length >= 2, 10_000, 'health samples');
    const modem = l.modem(0);
    const oldIccid = modem.model.profile.iccid;
    await l.unplug(0);
    modem.model.profile.iccid = '8949020990000000019';
    await l.plug(0);
    await until(
      async () => (await db.sql`select 1 from alerts where kind = 'sim_swap'`).length === 1,
      15_000,
      'sim_swap alert',
    );
    const [alert] = await db.sql<{ imei: string; message: string }[]>`
      select imei, message from alerts where kind = 'sim_swap'`;
    expect(alert?.imei).toBe(modem.imei);
    expect(alert?.message).toContain(`${oldIccid} → 8949020990000000019`);
    const [row] = await db.sql<{ iccid: string }[]>`select iccid from modems where imei = ${modem.imei}`;
    expect(row?.iccid).toBe('8949020990000000019');
  }, 60_000);

  it('another modem at a known USB path: the old one is journaled removed, the new one starts its own journal', async () => {
    const l = await lab(2);
    const s = supervisor(l);
    await s.start();
    await until(() => allIn('online', 2), 20_000, 'online');
    await s.stop();
    const oldImei = l.modem(0).imei;
    await l.unplug(0);
    l.modem(0).model.profile.imei = '866834040009993';
    await l.plug(0);
    const again = supervisor(l);
    await again.start();
    await until(
      async () => {
        const rows = await db.sql<
          { imei: string; state: string }[]
        >`select imei, state from modems order by imei`;
        const state = new Map(rows.map((r) => [r.imei, r.state]));
        return state.get(oldImei) === 'removed' && state.get('866834040009993') === 'online';
      },
      20_000,
      'old removed, new online',
    );
    const [last] = await db.sql<{ event: string }[]>`
      select event from modem_transitions where imei = ${oldImei} order by seq desc limit 1`;
    expect(last?.event).toBe('reconcile.replaced');
    await again.journal.flush();
    await expectContiguousJournal();
  }, 60_000);

  it('two supervisors with different host ids on one database do not touch each other', async () => {
    const a = await lab(2, 'lab-a', 1);
    const b = await lab(2, 'lab-b', 2);
    const sa = supervisor(a, { hostId: 'host-a' });
    const sb = supervisor(b, { hostId: 'host-b' });
    await Promise.all([sa.start(), sb.start()]);
    await until(
      async () => (await allIn('online', 2, 'host-a')) && allIn('online', 2, 'host-b'),
      20_000,
      'both',
    );
    const imeiB = b.modem(0).imei;
    await db.sql`insert into modem_commands (imei, kind, requested_by) values (${imeiB}, 'disable', 'sql')`;
    await until(
      async () => (await states('host-b')).some((r) => r.state === 'disabled'),
      15_000,
      'b disabled',
    );
    expect(await allIn('online', 2, 'host-a')).toBe(true);
    const ports = await db.sql<
      { host_id: string; http_port: number }[]
    >`select host_id, http_port from allocations`;
    expect(ports).toHaveLength(4);
  }, 60_000);

  it('more modems than free ports: the extra one is in error (no_free_port), the others serve', async () => {
    const l = await lab(3, 'lab-ports', 4);
    const s = supervisor(l, {
      ranges: {
        httpPort: { from: 22000, to: 22001 },
        socksPort: { from: 32000, to: 32001 },
        routingTable: { from: 20000, to: 20001 },
        ifaceId: { from: 0, to: 1 },
      },
    });
    await s.start();
    await until(
      async () => {
        const rows = await states();
        return (
          rows.filter((r) => r.state === 'online').length === 2 &&
          rows.filter((r) => r.state === 'error').length === 1
        );
      },
      20_000,
      '2 online, 1 error',
    );
    const [failed] = await db.sql<
      { imei: string; reason: string }[]
    >`select imei, reason from modems where state = 'error'`;
    expect(failed?.reason).toBe('no_free_port');
    expect(await allocations()).toHaveLength(2);
    expect((await allocations()).map((a) => a.imei)).not.toContain(failed?.imei);
    const alerts = await db.sql<
      { kind: string }[]
    >`select kind from alerts where imei = ${failed?.imei ?? ''}`;
    expect(alerts.map((a) => a.kind)).toContain('no_free_port');
  }, 60_000);
});
