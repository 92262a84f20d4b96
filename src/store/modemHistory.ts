import type { Sql } from 'postgres';
import { stateStrip, type HistoryWindow, type StatePoint } from './downsample.js';

/**
 * A modem's signal and states over a window, for the page's charts: at most one signal point per
 * bucket of the window (the bucket's samples averaged, at their mean time) from `modem_health`, and
 * the state strip from the journal (`modem_transitions`, src/store/downsample.ts).
 */

export interface SignalPoint {
  /** The mean time of the bucket's samples (a lone sample's own time). */
  at: Date;
  /** Means over the bucket's samples that have the value, one decimal; null when none has it. */
  rssi: number | null;
  rsrp: number | null;
  sinr: number | null;
  /** Signal polls averaged into this point. */
  samples: number;
}

export interface ModemHistory {
  from: Date;
  to: Date;
  bucketSeconds: number;
  signal: SignalPoint[];
  states: StatePoint[];
  /** The journal changed state more often than could be read: the strip starts later than `from`. */
  statesTruncated: boolean;
}

/** Journal rows read for one strip at most (state changes only: a flapping modem, days of it). */
const MAX_STATE_ROWS = 20_000;

export async function readModemHistory(sql: Sql, imei: string, window: HistoryWindow): Promise<ModemHistory> {
  const { from, to, bucketMs } = window;
  const [signal, changes] = await Promise.all([
    sql<SignalPoint[]>`
      select to_timestamp(avg(extract(epoch from at))) as at,
             round(avg(rssi)::numeric, 1)::float8 as rssi,
             round(avg(rsrp)::numeric, 1)::float8 as rsrp,
             round(avg(sinr)::numeric, 1)::float8 as sinr,
             count(*)::int as samples
      from modem_health
      where imei = ${imei} and at >= ${from} and at <= ${to}
      group by floor(extract(epoch from at - ${from}::timestamptz) * 1000 / ${bucketMs})
      order by 1`,
    // the entry in force at the window's start (the last one before it, found from the end by the
    // primary key) and every change of top-level state after it, newest first, bounded
    sql<{ at: Date; state: string }[]>`
      with entries as (
        select at, split_part(to_state, '.', 1) as state, seq,
               lag(split_part(to_state, '.', 1)) over (order by seq) as previous
        from modem_transitions
        where imei = ${imei} and at <= ${to}
          and seq >= coalesce((select seq from modem_transitions
                               where imei = ${imei} and at < ${from} order by seq desc limit 1), 1)
      )
      select at, state from entries where previous is distinct from state
      order by seq desc limit ${MAX_STATE_ROWS + 1}`,
  ]);
  const statesTruncated = changes.length > MAX_STATE_ROWS;
  const entries = changes.slice(0, MAX_STATE_ROWS).reverse();
  return {
    from,
    to,
    bucketSeconds: bucketMs / 1000,
    signal: signal.map((p) => ({ ...p })),
    states: stateStrip(entries, window),
    statesTruncated,
  };
}
