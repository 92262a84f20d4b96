/**
 * A modem's history as a few hundred points, whatever the window (pure: no I/O). The window is cut
 * into at most `HISTORY_MAX_POINTS` buckets of equal width: signal samples are averaged per bucket
 * (in SQL, src/store/modemHistory.ts), and the state strip keeps one state per bucket when the
 * journal changed state more often than that.
 */

/** Points of one series at most: 288 = 24 h of 5-minute buckets. */
export const HISTORY_MAX_POINTS = 288;
/** The longest window a chart may ask for, hours (health rows are kept 14 days by default). */
export const HISTORY_MAX_HOURS = 168;

export interface HistoryWindow {
  from: Date;
  to: Date;
  /** The width of one bucket, ms (at least 1 s). */
  bucketMs: number;
}

/**
 * The window of the last `hours` before `now`, cut into at most `points` buckets. Buckets lie on
 * multiples of their width since the epoch (24 h: every 5 minutes of the clock), so an answer asked
 * for again a moment later has the same points; the window starts at the first bucket boundary
 * within the last `hours` (less than one bucket after `now - hours`), and its last bucket is the
 * one under way.
 */
export function historyWindow(hours: number, now: Date, points = HISTORY_MAX_POINTS): HistoryWindow {
  if (!Number.isInteger(hours) || hours < 1 || hours > HISTORY_MAX_HOURS)
    throw new RangeError(`hours must be an integer from 1 to ${HISTORY_MAX_HOURS}`);
  if (!Number.isInteger(points) || points < 1) throw new RangeError('points must be a positive integer');
  const spanMs = hours * 3_600_000;
  const bucketMs = Math.max(1_000, Math.ceil(spanMs / points));
  return {
    from: new Date(Math.ceil((now.getTime() - spanMs) / bucketMs) * bucketMs),
    to: now,
    bucketMs,
  };
}

/** A journaled state the modem entered, and when (`to_state`: `online.serving`, `error`, ...). */
export interface StateEntry {
  at: Date;
  state: string;
}

/** One point of the strip: the modem was in `state` (top level) from `at` to the next point's. */
export interface StatePoint {
  at: Date;
  state: string;
}

/**
 * The state strip of a window: the journal's entries (the last one before the window and those
 * inside it, in journal order) as top-level states, each from when it began (the window's start for
 * the one before it) until the next. Consecutive equal states are one point. Time before the first
 * entry has no state. More than `maxPoints` changes: each bucket of the window (`bucketMs`, wider
 * if there would be more than `maxPoints`) gets the state it spent the most time in (the earlier
 * one on a tie), then equal neighbours are merged again; the first point of a bucket starts at the
 * bucket's start (or its first entry, if later).
 */
export function stateStrip(
  entries: readonly StateEntry[],
  window: HistoryWindow,
  maxPoints = HISTORY_MAX_POINTS,
): StatePoint[] {
  const from = window.from.getTime();
  const to = window.to.getTime();
  const runs: { at: number; state: string }[] = [];
  for (const e of entries) {
    const at = Math.max(from, e.at.getTime());
    if (at > to) break;
    const state = e.state.split('.')[0] ?? e.state;
    const last = runs[runs.length - 1];
    if (last && last.at === at) {
      // the earlier entry lasted no time (or lay before the window): the later one holds from here
      last.state = state;
      const before = runs[runs.length - 2];
      if (before && before.state === state) runs.pop();
      continue;
    }
    if (last && last.state === state) continue;
    runs.push({ at, state });
  }
  if (runs.length <= maxPoints) return runs.map((r) => ({ at: new Date(r.at), state: r.state }));

  // the window's buckets (on the clock), wider if they would be more than maxPoints
  const width = Math.max(1, window.bucketMs, Math.ceil((to - from) / maxPoints));
  const out: { at: number; state: string }[] = [];
  let r = 0;
  for (let b0 = from; b0 < to; b0 += width) {
    const b1 = Math.min(to, b0 + width);
    // the runs overlapping [b0, b1): time spent in each state
    while (r + 1 < runs.length && (runs[r + 1]?.at ?? Infinity) <= b0) r++;
    const spent = new Map<string, number>();
    let start: number | undefined;
    for (let i = r; i < runs.length; i++) {
      const run = runs[i];
      if (!run || run.at >= b1) break;
      const s = Math.max(b0, run.at);
      const e = Math.min(b1, runs[i + 1]?.at ?? to);
      if (e <= s) continue;
      start ??= s;
      spent.set(run.state, (spent.get(run.state) ?? 0) + (e - s));
    }
    if (start === undefined) continue; // before the first entry
    let best: string | undefined;
    let bestMs = -1;
    for (const [state, ms] of spent) {
      if (ms > bestMs) {
        best = state;
        bestMs = ms;
      }
    }
    if (best === undefined) continue;
    if (out[out.length - 1]?.state !== best) out.push({ at: start, state: best });
  }
  return out.map((p) => ({ at: new Date(p.at), state: p.state }));
}
