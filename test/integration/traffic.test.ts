import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Spool } from '../../src/fleet/spool.js';
import { periodStart } from '../../src/fleet/trafficMath.js';
import { TrafficWriter, type SpooledSample } from '../../src/fleet/trafficWriter.js';
import { openSql, type Sql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import type { TrafficSample } from '../../src/store/traffic.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { until } from '../helpers/until.js';

/**
 * Traffic samples into a real PostgreSQL (sql/0017_traffic.sql): per minute, hour and day exactly
 * once across replays, counter resets, new counter instances, a supervisor restart (a new writer
 * with nothing in memory) and a database outage (the spool); quotas follow the samples and roll
 * over with their period (sql/0016_quotas.sql).
 */

let db: TestDatabase;
let dir: string;
let store: Store;
const IMEI = '861000000000011';
const OTHER = '861000000000029';

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-traffic-'));
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-t' });
  await store.registerHost();
  for (const imei of [IMEI, OTHER])
    await store.upsertModem({ imei, hostId: 'host-t', usbPath: `1-${imei.slice(-1)}` });
});
afterAll(async () => {
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

const T0 = Date.parse('2026-03-15T10:00:00Z');
const sample = (
  imei: string,
  minute: number,
  instance: string,
  download: number,
  upload: number,
  host = 'host-t',
): TrafficSample => ({
  imei,
  host,
  at: new Date(T0 + minute * 60_000 + 100),
  minute: new Date(T0 + (minute - 1) * 60_000),
  instance,
  download,
  upload,
});

async function sums(sql: Sql, imei: string) {
  const of = async (table: string) => {
    const [r] = await sql<{ d: string | null; u: string | null }[]>`
      select sum(download)::text as d, sum(upload)::text as u from ${sql(table)} where imei = ${imei}`;
    return { download: Number(r?.d ?? 0), upload: Number(r?.u ?? 0) };
  };
  const minute = await of('traffic_minute');
  expect(await of('traffic_hour')).toEqual(minute);
  expect(await of('traffic_day')).toEqual(minute);
  return minute;
}

describe('traffic samples in PostgreSQL', () => {
  it('the growth of each sample, per minute, rolled up per hour and day; replays count nothing twice', async () => {
    const samples = [
      sample(IMEI, 1, 'aaaa0001', 1_000, 100),
      sample(IMEI, 2, 'aaaa0001', 3_000, 150),
      sample(IMEI, 3, 'aaaa0001', 3_000, 150), // idle: nothing
      sample(IMEI, 61, 'aaaa0001', 10_000, 1_000), // the next hour
    ];
    expect(await store.recordTraffic(samples)).toBe(4);
    expect(await sums(db.sql, IMEI)).toEqual({ download: 10_000, upload: 1_000 });
    // a spool replayed twice, a send that timed out but committed
    expect(await store.recordTraffic(samples)).toBe(0);
    expect(await store.recordTraffic(samples.slice(1, 2))).toBe(0);
    expect(await sums(db.sql, IMEI)).toEqual({ download: 10_000, upload: 1_000 });
    const minutes = await db.sql<{ at: Date; download: string }[]>`
      select at, download::text from traffic_minute where imei = ${IMEI} order by at`;
    expect(minutes.map((m) => [m.at.toISOString(), Number(m.download)])).toEqual([
      ['2026-03-15T10:00:00.000Z', 1_000],
      ['2026-03-15T10:01:00.000Z', 2_000],
      ['2026-03-15T11:00:00.000Z', 7_000],
    ]);
    const hours = await db.sql<{ at: Date }[]>`select at from traffic_hour where imei = ${IMEI} order by at`;
    expect(hours.map((h) => h.at.toISOString())).toEqual([
      '2026-03-15T10:00:00.000Z',
      '2026-03-15T11:00:00.000Z',
    ]);
  });

  it('a counter that went down was reset: its new value is counted; new counters count from zero', async () => {
    await store.recordTraffic([sample(IMEI, 62, 'aaaa0001', 400, 40)]); // reset: lower
    expect(await sums(db.sql, IMEI)).toEqual({ download: 10_400, upload: 1_040 });
    await store.recordTraffic([sample(IMEI, 63, 'aaaa0001', 900, 40)]);
    expect(await sums(db.sql, IMEI)).toEqual({ download: 10_900, upload: 1_040 });
    // the part created again (a new instance) even with higher values: all of it is new
    await store.recordTraffic([sample(IMEI, 64, 'bbbb0002', 5_000, 500)]);
    expect(await sums(db.sql, IMEI)).toEqual({ download: 15_900, upload: 1_540 });
  });

  it('a supervisor restart: the kernel counters carried on, the next process counts from what is stored', async () => {
    // process 1 stored up to 5000/500 (above) and crashed before its last sample; the kernel kept
    // counting; process 2 knows nothing of it and sends the counters as they are now
    const restarted = new Store({ sql: db.sql, url: db.url, hostId: 'host-t' });
    await restarted.recordTraffic([sample(IMEI, 70, 'bbbb0002', 8_000, 800)]);
    expect(await sums(db.sql, IMEI)).toEqual({ download: 18_900, upload: 1_840 });
    // another host's counters of the same modem (it moved) have their own cursor
    await store.recordTraffic([sample(IMEI, 71, 'cccc0003', 100, 10, 'host-u')]);
    expect(await sums(db.sql, IMEI)).toEqual({ download: 19_000, upload: 1_850 });
  });

  it('series with every step present, totals of today and this month', async () => {
    const series = await store.trafficSeries(IMEI, {
      from: new Date('2026-03-15T09:30:00Z'),
      to: new Date('2026-03-15T12:00:00Z'),
      step: '1h',
    });
    expect(series.map((p) => [p.at.toISOString(), p.download])).toEqual([
      ['2026-03-15T09:00:00.000Z', 0],
      ['2026-03-15T10:00:00.000Z', 3_000],
      ['2026-03-15T11:00:00.000Z', 16_000],
    ]);
    const totals = await store.trafficTotals(new Date('2026-03-15T20:00:00Z'));
    expect(totals.get(IMEI)).toEqual({
      today: { download: 19_000, upload: 1_850 },
      month: { download: 19_000, upload: 1_850 },
    });
    await expect(
      store.trafficSeries(IMEI, { from: new Date('2020-01-01'), to: new Date('2026-01-01'), step: '1m' }),
    ).rejects.toThrow(/at most 5000/);
  });

  it('SQL and TypeScript agree on period starts', async () => {
    const instants = [
      '2026-01-01T00:00:00Z',
      '2026-02-28T23:59:59.999Z',
      '2026-03-14T12:00:00Z',
      '2025-12-31T23:00:00Z',
    ];
    for (const iso of instants)
      for (const day of [1, 15, 28])
        for (const period of ['day', 'month'] as const) {
          const at = new Date(iso);
          const [row] = await db.sql<{ start: Date }[]>`
            select traffic_period_start(${period}, ${day}, ${at}, ${at}) as start`;
          expect(row?.start.toISOString(), `${period} ${day} ${iso}`).toBe(
            periodStart(period, at, day).toISOString(),
          );
        }
  });
});

describe('the traffic writer and an outage', () => {
  it('samples spool while the database is away and are stored once, in order, when it is back', async () => {
    const proxy = new TcpProxy(Number(new URL(db.url).port));
    await proxy.start();
    const u = new URL(db.url);
    u.port = String(proxy.port);
    const sql = openSql(u.toString(), { max: 2 });
    const alerts: string[] = [];
    const spoolDir = join(dir, 'spool');
    const writer = new TrafficWriter({
      sink: new Store({ sql, url: u.toString(), hostId: 'host-t' }),
      spool: new Spool<SpooledSample>({ dir: spoolDir, maxBytes: 10_000_000, fsync: 'always' }),
      retryBaseMs: 50,
      retryCapMs: 300,
      sendTimeoutMs: 3_000,
      events: { emit: (_n, { alert }) => alerts.push(alert.kind) },
    });
    try {
      await writer.start();
      await writer.append([sample(OTHER, 1, 'dddd0001', 100, 10)]);
      expect(writer.stats).toMatchObject({ persisted: 1, mode: 'direct' });
      proxy.cut();
      for (let m = 2; m <= 6; m++) await writer.append([sample(OTHER, m, 'dddd0001', m * 100, m * 10)]);
      expect(writer.stats.mode).toBe('spooling');
      expect(writer.stats.spooled).toBeGreaterThanOrEqual(5);
      expect((await readdir(spoolDir)).length).toBeGreaterThan(0);
      // nothing reached the database meanwhile
      expect(await sums(db.sql, OTHER)).toEqual({ download: 100, upload: 10 });
      proxy.up();
      await until(() => writer.stats.mode === 'direct', { timeoutMs: 20_000, intervalMs: 50 });
      await writer.append([sample(OTHER, 7, 'dddd0001', 700, 70)]);
      await writer.flush();
      expect(await sums(db.sql, OTHER)).toEqual({ download: 700, upload: 70 });
      const minutes = await db.sql<{ download: string }[]>`
        select download::text from traffic_minute where imei = ${OTHER} order by at`;
      // minute by minute, not lumped together at the end of the outage
      expect(minutes.map((m) => Number(m.download))).toEqual([100, 100, 100, 100, 100, 100, 100]);
      expect(alerts).toEqual([]);
    } finally {
      await writer.stop();
      await sql.end({ timeout: 1 });
      await proxy.stop();
    }
  });

  it('what a crashed process left in the spool is stored by the next one, and only once', async () => {
    const spoolDir = join(dir, 'spool-crash');
    const left = new Spool<SpooledSample>({ dir: spoolDir, maxBytes: 1_000_000, fsync: 'always' });
    await left.open();
    const spooled = [8, 9].map((m) => sample(OTHER, m, 'dddd0001', m * 100, m * 10));
    await left.append(spooled.map((s) => ({ ...s, at: s.at.toISOString(), minute: s.minute.toISOString() })));
    await left.close();
    // one of them had reached the database before the crash
    await store.recordTraffic(spooled.slice(0, 1));
    const writer = new TrafficWriter({
      sink: store,
      spool: new Spool<SpooledSample>({ dir: spoolDir, maxBytes: 1_000_000, fsync: 'always' }),
    });
    await writer.start();
    expect(await writer.drained()).toBe(true);
    await writer.stop();
    expect(await sums(db.sql, OTHER)).toEqual({ download: 900, upload: 90 });
  });
});

describe('quotas follow the samples', () => {
  it('usage counts from when the quota is set, per period; a sample in the next period starts it', async () => {
    const imei = '861000000000037';
    await store.upsertModem({ imei, hostId: 'host-t', usbPath: '1-7' });
    await store.recordTraffic([sample(imei, 1, 'eeee0001', 5_000, 0)]); // before the quota: not counted
    await store.setQuota(imei, { bytes: 100_000, period: 'day' }, 'test');
    // the quota starts now; samples of this test are in 2026, so move its start back
    await db.sql`update modem_quotas set period_start = ${new Date(T0)} where imei = ${imei}`;
    await store.recordTraffic([sample(imei, 2, 'eeee0001', 25_000, 5_000)]);
    expect((await store.quota(imei))?.used).toBe(25_000);
    await db.sql`update modem_quotas set alert_level = 80, closed_reason = 'quota_exceeded', closed_at = now() where imei = ${imei}`;
    // a sample in the next UTC day starts that day's period with its own bytes
    await store.recordTraffic([sample(imei, 14 * 60 + 1, 'eeee0001', 26_000, 5_500)]);
    const q = await store.quota(imei);
    expect(q).toMatchObject({ used: 1_500, alertLevel: 0, closedReason: null });
    expect(q?.periodStart.toISOString()).toBe('2026-03-16T00:00:00.000Z');
  });

  it('bad input changes nothing; a raise keeps what the period used; another period starts now', async () => {
    const imei = '861000000000037';
    const before = await store.quota(imei);
    for (const bad of [
      { bytes: 0, period: 'day' },
      { bytes: 1.5, period: 'day' },
      { bytes: 10, period: 'week' },
      { bytes: 10, period: 'day', monthStartDay: 5 },
      { bytes: 10, period: 'month', monthStartDay: 29 },
      { bytes: 10, period: 'day', extra: 1 },
      [10],
      null,
    ])
      await expect(store.setQuota(imei, bad, 'test')).rejects.toMatchObject({ code: 'invalid_quota' });
    expect(await store.quota(imei)).toEqual(before);
    await expect(
      store.setQuota('861000000000995', { bytes: 10, period: 'day' }, 'test'),
    ).rejects.toMatchObject({
      code: 'unknown_modem',
    });
    const raised = await store.setQuota(imei, { bytes: 200_000, period: 'day' }, 'test');
    expect(raised).toMatchObject({ bytes: 200_000, used: 1_500 });
    expect(raised.periodStart).toEqual(before?.periodStart);
    const monthly = await store.setQuota(
      imei,
      { bytes: 200_000, period: 'month', monthStartDay: 15 },
      'test',
    );
    expect(monthly).toMatchObject({ period: 'month', monthStartDay: 15, used: 0 });
    const reset = await store.resetQuota(imei, 'test');
    expect(reset.used).toBe(0);
    expect(await store.clearQuota(imei, 'test')).toBe(true);
    expect(await store.quota(imei)).toBeNull();
    await expect(store.resetQuota(imei, 'test')).rejects.toMatchObject({ code: 'no_quota' });
  });

  it('a change reaches the owning host: modem_config_change names the modem and its host', async () => {
    const imei = '861000000000037';
    const seen: unknown[] = [];
    const listener = await store.listen(['modem_config_change'], (n) => seen.push(n.payload));
    try {
      await store.setExpiry(imei, new Date('2030-01-01T00:00:00Z'), 'test');
      await store.setQuota(imei, { bytes: 1_000, period: 'total' }, 'test');
      await until(() => seen.length >= 2, { timeoutMs: 5_000, intervalMs: 20 });
      expect(seen[0]).toEqual({ imei, host: 'host-t', changed: ['quota'] });
      // usage is not a change anyone waits for: no notification per sample
      const n = seen.length;
      await store.recordTraffic([sample(imei, 20 * 60, 'eeee0001', 90_000, 0)]);
      await new Promise((r) => setTimeout(r, 300));
      expect(seen.length).toBe(n);
      expect(await store.clearExpiry(imei, 'test')).toBe(true);
      expect(await store.clearQuota(imei, 'test')).toBe(true);
      expect(await store.quota(imei)).toBeNull();
    } finally {
      await listener.stop();
    }
  });
});
