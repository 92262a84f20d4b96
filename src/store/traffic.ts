import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { pgTextArray } from './journal.js';

/**
 * Traffic samples and what is read back of them (sql/0017_traffic.sql): a sample is a reading of
 * one modem's kernel counters on one host, cumulative within one counter instance; the database
 * turns it into bytes per minute, hour and day exactly once.
 */
export interface TrafficSample {
  imei: string;
  host: string;
  /** When the counters were read (orders samples; one already stored is skipped). */
  at: Date;
  /** The minute the bytes since the previous reading belong to. */
  minute: Date;
  /** The counters' instance token (new counters count from zero). */
  instance: string;
  /** Cumulative payload bytes of the instance: to the customer, from the customer. */
  download: number;
  upload: number;
}

export const TRAFFIC_STEPS = ['1m', '1h', '1d'] as const;
export type TrafficStep = (typeof TRAFFIC_STEPS)[number];

const STEP: Record<TrafficStep, { table: string; ms: number; unit: string }> = {
  '1m': { table: 'traffic_minute', ms: 60_000, unit: 'minute' },
  '1h': { table: 'traffic_hour', ms: 3_600_000, unit: 'hour' },
  '1d': { table: 'traffic_day', ms: 86_400_000, unit: 'day' },
};

/** Points one series may have (a longer range needs a larger step). */
export const MAX_TRAFFIC_POINTS = 5_000;

export interface TrafficPoint {
  at: Date;
  download: number;
  upload: number;
}

/** Stores samples in order (idempotent); how many were new. */
export async function recordTraffic(sql: Sql, samples: readonly TrafficSample[]): Promise<number> {
  if (!samples.length) return 0;
  const col = <T extends string | number | null>(f: (s: TrafficSample) => T): string =>
    pgTextArray(samples.map(f));
  const [row] = await sql<{ applied: number }[]>`
    select record_traffic(
      ${col((s) => s.imei)}::text[], ${col((s) => s.host)}::text[],
      ${col((s) => s.at.toISOString())}::timestamptz[], ${col((s) => s.minute.toISOString())}::timestamptz[],
      ${col((s) => s.instance)}::text[], ${col((s) => s.download)}::bigint[], ${col((s) => s.upload)}::bigint[]
    ) as applied`;
  return Number(row?.applied ?? 0);
}

/** The start of the step that holds `at` (UTC). */
export function stepFloor(at: Date, step: TrafficStep): Date {
  const ms = STEP[step].ms;
  return new Date(Math.floor(at.getTime() / ms) * ms);
}

/**
 * Bytes per step from `from` (floored to the step) up to `to` (exclusive), every step present (zero
 * when nothing went through). Throws `invalid_request` past MAX_TRAFFIC_POINTS points.
 */
export async function trafficSeries(
  sql: Sql,
  imei: string,
  range: { from: Date; to: Date; step: TrafficStep },
): Promise<TrafficPoint[]> {
  const { table, ms, unit } = STEP[range.step];
  const from = stepFloor(range.from, range.step);
  const points = Math.ceil((range.to.getTime() - from.getTime()) / ms);
  if (points > MAX_TRAFFIC_POINTS)
    throw new ModemfleetError(
      'invalid_request',
      `from..to at step ${range.step} is ${points} points; at most ${MAX_TRAFFIC_POINTS} (use a larger step or a shorter range)`,
    );
  if (points <= 0) return [];
  const rows = await sql<{ at: Date; download: string; upload: string }[]>`
    select s.at, coalesce(t.download, 0)::text as download, coalesce(t.upload, 0)::text as upload
    from generate_series(${from}::timestamptz, ${new Date(range.to.getTime() - 1)}::timestamptz,
                         ${`1 ${unit}`}::interval) as s(at)
    left join ${sql(table)} t on t.imei = ${imei} and t.at = s.at
    order by s.at`;
  return rows.map((r) => ({ at: r.at, download: Number(r.download), upload: Number(r.upload) }));
}

export interface TrafficTotals {
  today: { download: number; upload: number };
  month: { download: number; upload: number };
}

/** Today's and this calendar month's bytes (UTC) per modem (only modems with traffic). */
export async function trafficTotals(sql: Sql, now = new Date()): Promise<Map<string, TrafficTotals>> {
  const day = stepFloor(now, '1d');
  const month = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
  const rows = await sql<
    { imei: string; day_down: string; day_up: string; month_down: string; month_up: string }[]
  >`
    select imei,
      coalesce(sum(download) filter (where at >= ${day}), 0)::text as day_down,
      coalesce(sum(upload) filter (where at >= ${day}), 0)::text as day_up,
      sum(download)::text as month_down, sum(upload)::text as month_up
    from traffic_day where at >= ${month} group by imei`;
  return new Map(
    rows.map((r) => [
      r.imei,
      {
        today: { download: Number(r.day_down), upload: Number(r.day_up) },
        month: { download: Number(r.month_down), upload: Number(r.month_up) },
      },
    ]),
  );
}

export interface TrafficRetention {
  minuteDays: number;
  hourDays: number;
  dayDays: number;
}

/** Deletes rows past their table's retention (at most `maxRows` per table); how many. */
export async function pruneTraffic(
  sql: Sql,
  retention: TrafficRetention,
  maxRows = 10_000,
  now = new Date(),
): Promise<number> {
  const before = (days: number): Date => new Date(now.getTime() - days * 86_400_000);
  const [row] = await sql<{ n: string }[]>`
    select prune_traffic(${before(retention.minuteDays)}, ${before(retention.hourDays)},
                         ${before(retention.dayDays)}, ${maxRows})::text as n`;
  return Number(row?.n ?? 0);
}
