import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { openSql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import { checkRanges, DEFAULT_RANGES } from '../../src/allocationRanges.js';
import { allocate } from '../../src/store/allocations.js';
import type { TransitionRecord } from '../../src/store/types.js';

let db: TestDatabase;
let store: Store;
const imei = (n: number): string => String(350000000000000 + n);

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-a' });
  await store.registerHost({ name: 'Farm A' });
  await new Store({ sql: db.sql, url: db.url, hostId: 'farm-b' }).registerHost();
});
afterAll(async () => {
  await db?.drop();
});

describe('allocate', () => {
  it('50 concurrent calls give 50 distinct sets; the same IMEI again gets the same set', async () => {
    const imeis = Array.from({ length: 50 }, (_, i) => imei(i));
    const first = await Promise.all(imeis.map((i) => store.allocate(i)));
    for (const key of ['slot', 'httpPort', 'socksPort', 'routingTable', 'ifaceId', 'proxyUser'] as const) {
      expect(new Set(first.map((a) => a[key])).size).toBe(50);
    }
    for (const a of first) {
      expect(a.routingTable).toBeGreaterThanOrEqual(10000);
      expect([253, 254, 255]).not.toContain(a.routingTable);
      expect(a.httpPort).not.toBe(a.socksPort);
    }
    const again = await Promise.all(imeis.map((i) => store.allocate(i)));
    expect(again).toEqual(first);
    // other hosts allocate independently: the same slot numbers are fine there
    const other = await allocate(db.sql, 'farm-b', imei(0));
    expect(other.slot).toBe(0);
  });

  it('fills gaps left by removed allocations, and reports no_free_port when full', async () => {
    const tiny = {
      httpPort: { from: 40000, to: 40001 },
      socksPort: { from: 41000, to: 41001 },
      routingTable: { from: 20000, to: 20001 },
      ifaceId: { from: 0, to: 1 },
    };
    await new Store({ sql: db.sql, url: db.url, hostId: 'tiny' }).registerHost();
    const a = await allocate(db.sql, 'tiny', imei(900), tiny);
    const b = await allocate(db.sql, 'tiny', imei(901), tiny);
    expect([a.slot, b.slot]).toEqual([0, 1]);
    await expect(allocate(db.sql, 'tiny', imei(902), tiny)).rejects.toMatchObject({ code: 'no_free_port' });
    await db.sql`delete from allocations where host_id = 'tiny' and imei = ${imei(900)}`;
    const c = await allocate(db.sql, 'tiny', imei(902), tiny);
    expect(c.httpPort).toBe(40000);
  });

  it('rejects bad input clearly', async () => {
    await expect(store.allocate('12345')).rejects.toMatchObject({ code: 'invalid_imei' });
    await expect(allocate(db.sql, 'nope', imei(1))).rejects.toMatchObject({ code: 'unknown_host' });
    expect(checkRanges(DEFAULT_RANGES)).toEqual([]);
    expect(checkRanges({ ...DEFAULT_RANGES, routingTable: { from: 100, to: 300 } })[0]).toMatch(/253-255/);
    expect(checkRanges({ ...DEFAULT_RANGES, socksPort: DEFAULT_RANGES.httpPort })[0]).toMatch(/overlap/);
  });
});

const t = (i: string, seq: number, to: string, extra: Partial<TransitionRecord> = {}): TransitionRecord => ({
  imei: i,
  seq,
  from: seq === 1 ? null : 'x',
  to,
  event: `e${seq}`,
  at: new Date(1_700_000_000_000 + seq * 1000),
  host: 'farm-a',
  ...extra,
});

describe('appendTransitions', () => {
  it('stores a batch once even when appended twice, and updates the modems row', async () => {
    const m = imei(100);
    const batch = [
      t(m, 1, 'detecting'),
      t(m, 2, 'initializing.identity'),
      t(m, 3, 'online.serving', { wanIp: '10.64.0.7', detail: { operator: 'Vodafone' } }),
    ];
    const first = await store.appendTransitions(batch);
    expect(first).toEqual([{ imei: m, stored: 3, lastSeq: 3, gapAt: null }]);
    const second = await store.appendTransitions(batch);
    expect(second).toEqual([{ imei: m, stored: 0, lastSeq: 3, gapAt: null }]);
    const rows = await db.sql<
      { seq: number }[]
    >`select seq from modem_transitions where imei = ${m} order by seq`;
    expect(rows.map((r) => r.seq)).toEqual([1, 2, 3]);
    const [modem] = await db.sql`select state, substate, wan_ip, seq from modems where imei = ${m}`;
    expect(modem).toMatchObject({ state: 'online', substate: 'online.serving', wan_ip: '10.64.0.7', seq: 3 });
    const history = await store.transitions(m, { limit: 2 });
    expect(history.map((h) => h.seq)).toEqual([3, 2]);
    expect(history[0]?.detail).toEqual({ operator: 'Vodafone' });
  });

  it('handles many modems, out-of-order rows and overlaps in one round trip', async () => {
    const a = imei(200);
    const b = imei(201);
    await store.appendTransitions([t(a, 1, 'detecting')]);
    const result = await store.appendTransitions([
      t(b, 2, 'initializing'),
      t(a, 3, 'error', { reason: 'sim_missing' }),
      t(b, 1, 'detecting'),
      t(a, 1, 'detecting'),
      t(a, 2, 'initializing.sim'),
    ]);
    expect(result.sort((x, y) => x.imei.localeCompare(y.imei))).toEqual([
      { imei: a, stored: 2, lastSeq: 3, gapAt: null },
      { imei: b, stored: 2, lastSeq: 2, gapAt: null },
    ]);
    const [row] = await db.sql`select state, reason, wan_ip from modems where imei = ${a}`;
    expect(row).toMatchObject({ state: 'error', reason: 'sim_missing', wan_ip: null });
  });

  it('stores up to a gap and reports it; other modems of the batch are not held back', async () => {
    const a = imei(300);
    const b = imei(301);
    const result = await store.appendTransitions([
      t(a, 1, 'detecting'),
      t(a, 3, 'online'),
      t(b, 1, 'detecting'),
    ]);
    expect(result.find((r) => r.imei === a)).toEqual({ imei: a, stored: 1, lastSeq: 1, gapAt: 2 });
    expect(result.find((r) => r.imei === b)).toEqual({ imei: b, stored: 1, lastSeq: 1, gapAt: null });
    const gap2 = await store.appendTransitions([t(b, 3, 'online')]);
    expect(gap2).toEqual([{ imei: b, stored: 0, lastSeq: 1, gapAt: 2 }]);
    const filled = await store.appendTransitions([t(a, 3, 'online'), t(a, 2, 'initializing')]);
    expect(filled).toEqual([{ imei: a, stored: 2, lastSeq: 3, gapAt: null }]);
  });

  it('a row already above the stored seq (written around the journal) is skipped, not an error', async () => {
    const a = imei(350);
    await store.appendTransitions([t(a, 1, 'detecting')]);
    await db.sql`insert into modem_transitions (imei, seq, to_state, event, at)
      values (${a}, 2, 'initializing', 'by-hand', now())`;
    const result = await store.appendTransitions([t(a, 2, 'initializing'), t(a, 3, 'online')]);
    expect(result).toEqual([{ imei: a, stored: 1, lastSeq: 3, gapAt: null }]);
    const rows = await db.sql<{ seq: number; event: string }[]>`
      select seq, event from modem_transitions where imei = ${a} order by seq`;
    expect(rows).toEqual([
      { seq: 1, event: 'e1' },
      { seq: 2, event: 'by-hand' },
      { seq: 3, event: 'e3' },
    ]);
  });

  it('concurrent writers of the same modems: every row once, contiguous, the mirror at the last', async () => {
    const ms = [imei(370), imei(371), imei(372)];
    await store.appendTransitions(ms.map((m) => t(m, 1, 'detecting')));
    const batch = (from: number, to: number): TransitionRecord[] =>
      ms.flatMap((m) => Array.from({ length: to - from + 1 }, (_, k) => t(m, from + k, 'online')));
    const other = openSql(db.url, { max: 4 });
    try {
      const writers = [store, new Store({ sql: other, url: db.url, hostId: 'farm-a' })];
      // a deadlock between two writers is retryable (the journal writer spools and replays)
      const append = async (w: Store, b: TransitionRecord[]): Promise<void> => {
        for (;;) {
          try {
            await w.appendTransitions(b);
            return;
          } catch (err) {
            if ((err as { code?: string }).code !== '40P01') throw err;
          }
        }
      };
      for (let round = 0; round < 5; round++) {
        const base = 1 + round * 20;
        await Promise.all([
          append(writers[0] as Store, batch(base + 1, base + 20)),
          append(writers[1] as Store, batch(base + 1, base + 20)),
          append(writers[1] as Store, batch(base + 1, base + 10)),
          append(writers[0] as Store, batch(base + 11, base + 20)),
        ]);
        // whatever order they ran in, the tail of a gap comes again (as the writer's replay does)
        await append(writers[0] as Store, batch(base + 1, base + 20));
      }
      for (const m of ms) {
        const rows = await db.sql<{ seq: number }[]>`
          select seq from modem_transitions where imei = ${m} order by seq`;
        expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 101 }, (_, k) => k + 1));
        const [modem] = await db.sql`select seq, state from modems where imei = ${m}`;
        expect(modem).toMatchObject({ seq: 101, state: 'online' });
      }
    } finally {
      await other.end();
    }
  });

  it('append_transitions(jsonb) stays for callers in SQL, with the same result', async () => {
    const a = imei(360);
    const rows = await db.sql<{ imei: string; stored: number; last_seq: number; gap_at: number | null }[]>`
      select * from append_transitions(${db.sql.json([
        { imei: a, seq: 1, to_state: 'detecting', event: 'sql', at: new Date().toISOString() },
        { imei: a, seq: 3, from_state: 'x', to_state: 'online', event: 'sql', at: new Date().toISOString() },
      ])}::jsonb)`;
    expect(rows).toEqual([{ imei: a, stored: 1, last_seq: 1, gap_at: 2 }]);
    expect(await db.sql`select * from append_transitions('[]'::jsonb)`).toEqual([]);
  });

  it('rejects malformed rows before sending anything', async () => {
    await expect(store.appendTransitions([t('123', 1, 'online')])).rejects.toThrow(/imei must be 15 digits/);
    await expect(store.appendTransitions([t(imei(400), 0, 'online')])).rejects.toThrow(/seq must be/);
    await expect(store.appendTransitions([t(imei(400), 1, 'flying')])).rejects.toThrow(
      /unknown state 'flying'/,
    );
    await expect(
      store.appendTransitions([t(imei(400), 1, 'online', { detail: { big: 'x'.repeat(5000) } })]),
    ).rejects.toThrow(/detail larger/);
    const rows = await db.sql`select 1 from modems where imei = ${imei(400)}`;
    expect(rows.length).toBe(0);
  });
});

describe('commands', () => {
  it('claims each command once, operator commands before the rotate, one running per modem, only for this host', async () => {
    const a = imei(500);
    const b = imei(501);
    const foreign = imei(502);
    await store.upsertModem({ imei: a });
    await store.upsertModem({ imei: b });
    await new Store({ sql: db.sql, url: db.url, hostId: 'farm-b' }).upsertModem({ imei: foreign });
    const a1 = await store.insertCommand(a, 'rotate', 'test');
    const a2 = await store.insertCommand(a, 'reset', 'test');
    const b1 = await store.insertCommand(b, 'disable', 'test');
    const f1 = await store.insertCommand(foreign, 'rotate', 'test');

    const [x, y] = await Promise.all([store.claimCommands(), store.claimCommands()]);
    const claimed = [...x, ...y].map((c) => c.id).sort((p, q) => p - q);
    // the reset goes before the modem's queued rotate (a link looping rotates cannot hold it back)
    expect(claimed).toEqual([a2, b1]);
    expect(await store.claimCommands()).toEqual([]); // a1 waits for a2

    expect(await store.finishCommand(a2, true, { done: 'reset' })).toBe(true);
    expect(await store.finishCommand(a2, true)).toBe(false); // finished once
    const next = await store.claimCommands();
    expect(next.map((c) => c.id)).toEqual([a1]);
    expect(next[0]?.kind).toBe('rotate');

    const interrupted = await store.failInterruptedCommands();
    expect(interrupted.sort()).toEqual([a1, b1].sort());
    expect((await store.command(a1))?.status).toBe('failed');
    expect((await store.command(a2))?.result).toEqual({ done: 'reset' });
    expect((await store.command(f1))?.status).toBe('pending');
  });

  it('bad commands are refused with a clear error and nothing is stored', async () => {
    const a = imei(600);
    await store.upsertModem({ imei: a });
    await expect(store.insertCommand(a, 'explode', 'test')).rejects.toMatchObject({
      code: 'invalid_command',
    });
    await expect(store.insertCommand(imei(601), 'rotate', 'test')).rejects.toMatchObject({
      code: 'unknown_modem',
    });
    // a hand-inserted command with an unknown kind: the database itself refuses it
    await expect(
      db.sql`insert into modem_commands (imei, kind) values (${a}, 'explode')`,
    ).rejects.toMatchObject({
      code: '23514',
      constraint_name: 'modem_commands_kind_check',
    });
    const rows = await db.sql`select count(*)::int as n from modem_commands where imei = ${a}`;
    expect(rows[0]?.['n']).toBe(0);
  });
});

describe('health and alerts', () => {
  it('records samples, updates the modem, and prunes old ones', async () => {
    const a = imei(700);
    await store.upsertModem({ imei: a });
    await store.recordHealth([
      { imei: a, at: new Date(Date.now() - 3 * 86_400_000), rssi: -90 },
      { imei: a, rssi: -71, rsrp: -99, rsrq: -9, sinr: 11, operator: 'Vodafone', technology: 'LTE' },
    ]);
    const [m] = await db.sql`select rssi, operator, technology from modems where imei = ${a}`;
    expect(m).toEqual({ rssi: -71, operator: 'Vodafone', technology: 'LTE' });
    expect(await store.pruneHealthOlderThan(86_400)).toBe(1);
    const left = await db.sql`select count(*)::int as n from modem_health where imei = ${a}`;
    expect(left[0]?.['n']).toBe(1);
  });
});

describe('public addresses', () => {
  it('history per (public, private) pair; "seen within H hours" on the modem or on the farm', async () => {
    const [a, b] = [imei(900), imei(901)];
    await store.upsertModem({ imei: a });
    await store.upsertModem({ imei: b });
    expect(await store.recordAddress(a, '203.0.113.1', '10.64.0.1')).toEqual({ previous: null });
    expect(await store.recordAddress(a, '203.0.113.2', '10.64.0.2')).toEqual({ previous: '203.0.113.1' });
    await store.recordAddress(a, '203.0.113.2', '10.64.0.2');
    await store.recordAddress(b, '203.0.113.3', '10.64.0.3');
    const history = await store.addresses(a);
    expect(history.map((h) => [h.publicIp, h.timesSeen])).toEqual([
      ['203.0.113.2', 2],
      ['203.0.113.1', 1],
    ]);
    expect(await store.addressSeenWithin(a, '203.0.113.1', 1)).toBe(true);
    expect(await store.addressSeenWithin(a, '203.0.113.3', 1)).toBe(false); // another modem's
    expect(await store.addressSeenWithin(null, '203.0.113.3', 1)).toBe(true); // the farm's
    expect(await store.addressSeenWithin(null, '203.0.113.9', 1)).toBe(false);
    // outside the window: last seen 2 h ago
    await db.sql`update modem_addresses set last_seen = now() - interval '2 hours' where imei = ${a}
      and public_ip = '203.0.113.1'`;
    expect(await store.addressSeenWithin(a, '203.0.113.1', 1)).toBe(false);
    expect(await store.addressSeenWithin(a, '203.0.113.1', 3)).toBe(true);
    // bad input: a clear error, nothing stored
    await expect(store.recordAddress(a, 'not-an-ip', '10.64.0.1')).rejects.toMatchObject({
      code: 'invalid_address',
    });
    await expect(store.addressSeenWithin(a, '203.0.113', 1)).rejects.toMatchObject({
      code: 'invalid_address',
    });
    expect(await store.addresses(a)).toHaveLength(2);
  });
});

describe('uptime', () => {
  it('matches a journal built by hand: online over wanted, disabled time not wanted, per window and farm', async () => {
    const [a, b] = [imei(910), imei(911)];
    await store.upsertModem({ imei: a });
    await store.upsertModem({ imei: b });
    const H = 3_600_000;
    const now = Date.now();
    const journal = (id: string, steps: [string, number][]): TransitionRecord[] =>
      steps.map(([to, agoMs], i) => ({
        imei: id,
        seq: i + 1,
        from: i === 0 ? null : (steps[i - 1]?.[0] ?? null),
        to,
        event: 'test',
        at: new Date(now - agoMs),
      }));
    await store.appendTransitions([
      ...journal(a, [
        ['detecting.probing', 40 * 24 * H], // before every window: the state at each window's start
        ['online.serving', 10 * H],
        ['recovering', 6 * H],
        ['online.rotating.detaching', 5 * H], // a rotation is online (asked for)
        ['online.serving', 4.5 * H],
        ['disabling', 2 * H],
        ['disabled', 2 * H - 60_000],
        ['online.serving', 1 * H],
      ]),
      ...journal(b, [['disabled', 40 * 24 * H]]),
    ]);
    const up = await store.uptime(a);
    // online: 4 h + 3 h (rotation and serving) + 1 h; not wanted: the 1 h disabling/disabled
    const online = 8 * 3600;
    const expected = { '24h': 23 * 3600, '7d': 167 * 3600, '30d': 719 * 3600 };
    for (const [window, wanted] of Object.entries(expected) as [keyof typeof expected, number][]) {
      expect(Math.abs(up[window].onlineSeconds - online), window).toBeLessThanOrEqual(5);
      expect(Math.abs(up[window].wantedSeconds - wanted), window).toBeLessThanOrEqual(5);
      expect(up[window].ratio, window).toBeCloseTo(online / wanted, 3);
    }
    // never wanted in the window: no ratio (not 0, not 1)
    expect((await store.uptime(b))['24h']).toEqual({ ratio: null, onlineSeconds: 0, wantedSeconds: 0 });
    // the farm: sums over every modem (others of this file's database included)
    const farm = await store.uptime(null);
    expect(farm['30d'].onlineSeconds).toBeGreaterThanOrEqual(up['30d'].onlineSeconds);
    expect(farm['30d'].wantedSeconds).toBeGreaterThanOrEqual(up['30d'].wantedSeconds);
  });
});
