import { fc, test as prop } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import {
  HISTORY_MAX_POINTS,
  historyWindow,
  stateStrip,
  type HistoryWindow,
  type StateEntry,
  type StatePoint,
} from '../../src/store/downsample.js';

const T0 = Date.parse('2026-03-01T00:00:00Z');
const at = (ms: number) => new Date(T0 + ms);
const win = (fromMs: number, toMs: number, bucketMs = 1000): HistoryWindow => ({
  from: at(fromMs),
  to: at(toMs),
  bucketMs,
});
const plain = (points: StatePoint[]) => points.map((p) => [p.at.getTime() - T0, p.state]);

/** The state in force at `t` in a strip (null before its first point). */
const stateAt = (points: readonly { at: Date; state: string }[], t: number): string | null => {
  let s: string | null = null;
  for (const p of points) if (p.at.getTime() <= t) s = p.state;
  return s;
};

describe('historyWindow', () => {
  it('cuts the last hours into at most 288 buckets (24 h: 5 minutes each)', () => {
    const now = at(0);
    expect(historyWindow(24, now)).toEqual({ from: at(-86_400_000), to: now, bucketMs: 300_000 });
    expect(historyWindow(1, now).bucketMs).toBe(12_500);
    expect(historyWindow(168, now).bucketMs * HISTORY_MAX_POINTS).toBeGreaterThanOrEqual(168 * 3_600_000);
    expect(historyWindow(1, now, 10_000).bucketMs).toBe(1_000); // never below a second
  });

  it('buckets on the clock: the same points a moment later, never more than asked for', () => {
    const now = at(123_456); // 2 minutes into a 5-minute bucket
    const w = historyWindow(24, now);
    expect(w.from).toEqual(at(-86_400_000 + 300_000));
    expect(w.from.getTime() % w.bucketMs).toBe(0);
    expect(Math.ceil((now.getTime() - w.from.getTime()) / w.bucketMs)).toBe(288);
    expect(historyWindow(24, at(299_999)).from).toEqual(w.from);
    for (const hours of [1, 7, 24, 100, 168])
      for (const ms of [0, 1, 4_999, 123_456_789]) {
        const x = historyWindow(hours, at(ms));
        expect(x.from.getTime() % x.bucketMs).toBe(0);
        expect(at(ms).getTime() - x.from.getTime()).toBeLessThanOrEqual(hours * 3_600_000);
        expect(at(ms).getTime() - x.from.getTime()).toBeGreaterThan(hours * 3_600_000 - x.bucketMs);
        expect(Math.ceil((at(ms).getTime() - x.from.getTime()) / x.bucketMs)).toBeLessThanOrEqual(288);
      }
  });

  it('refuses hours that are not an integer from 1 to 168', () => {
    for (const bad of [0, -1, 1.5, 169, Number.NaN, Infinity])
      expect(() => historyWindow(bad, new Date())).toThrow(/hours must be an integer from 1 to 168/);
  });
});

describe('stateStrip', () => {
  it('top-level states from the entry before the window on, equal neighbours merged', () => {
    const entries: StateEntry[] = [
      { at: at(-5_000), state: 'online.serving' }, // before the window: holds from its start
      { at: at(2_000), state: 'online.rotating.detaching' },
      { at: at(3_000), state: 'online.serving' },
      { at: at(4_000), state: 'recovering.reinit' },
      { at: at(5_000), state: 'recovering.softReset' },
      { at: at(6_000), state: 'error' },
      { at: at(20_000), state: 'removed' }, // after the window's end
    ];
    expect(plain(stateStrip(entries, win(0, 10_000)))).toEqual([
      [0, 'online'],
      [4_000, 'recovering'],
      [6_000, 'error'],
    ]);
  });

  it('no state before the first entry; an entry at the very start replaces the one before', () => {
    expect(plain(stateStrip([{ at: at(3_000), state: 'detecting.probing' }], win(0, 10_000)))).toEqual([
      [3_000, 'detecting'],
    ]);
    const atStart = [
      { at: at(-1), state: 'error' },
      { at: at(0), state: 'online.serving' },
    ];
    expect(plain(stateStrip(atStart, win(0, 10_000)))).toEqual([[0, 'online']]);
    expect(stateStrip([], win(0, 10_000))).toEqual([]);
  });

  it('more changes than points: each bucket takes the state it spent the most time in', () => {
    const entries = [
      { at: at(0), state: 'online' },
      { at: at(60), state: 'error' },
      { at: at(70), state: 'online' },
      { at: at(80), state: 'error' },
    ];
    // buckets [0, 50) and [50, 100): the second spent 20 ms online and 30 ms in error
    expect(plain(stateStrip(entries, win(0, 100, 50), 2))).toEqual([
      [0, 'online'],
      [50, 'error'],
    ]);
    // a flapping modem, a day of it: never more than the points asked for
    const flapping = Array.from({ length: 10_000 }, (_, i) => ({
      at: at(i * 8_640),
      state: i % 3 === 0 ? 'online.serving' : i % 3 === 1 ? 'recovering.reinit' : 'initializing.sim',
    }));
    const strip = stateStrip(flapping, win(0, 86_400_000, 300_000));
    expect(strip.length).toBeGreaterThan(0);
    expect(strip.length).toBeLessThanOrEqual(HISTORY_MAX_POINTS);
  });

  const entriesArb = fc
    .array(
      fc.record({
        t: fc.integer({ min: -2_000, max: 12_000 }),
        state: fc.constantFrom('online.serving', 'online.rotating.attaching', 'error', 'removed', 'disabled'),
      }),
      { maxLength: 60 },
    )
    .map((xs) => xs.sort((a, b) => a.t - b.t).map((x) => ({ at: at(x.t), state: x.state })));

  prop.prop([entriesArb, fc.integer({ min: 1, max: 40 })])(
    'bounded, in order, inside the window, no equal neighbours; exact when the changes fit',
    (entries, maxPoints) => {
      const window = win(0, 10_000);
      const strip = stateStrip(entries, window, maxPoints);
      expect(strip.length).toBeLessThanOrEqual(maxPoints);
      for (let i = 0; i < strip.length; i++) {
        const p = strip[i] as StatePoint;
        expect(p.at.getTime()).toBeGreaterThanOrEqual(T0);
        expect(p.at.getTime()).toBeLessThanOrEqual(T0 + 10_000);
        expect(p.state).not.toContain('.');
        if (i > 0) {
          expect(p.at.getTime()).toBeGreaterThan((strip[i - 1] as StatePoint).at.getTime());
          expect(p.state).not.toBe((strip[i - 1] as StatePoint).state);
        }
      }
      // the journal's own answer: the last entry at or before t, top level (the window's start for
      // entries before it); where the strip was not thinned it says the same at every instant
      const full = stateStrip(entries, window, Infinity);
      if (full.length <= maxPoints) expect(strip).toEqual(full);
      const reference = entries.map((e) => ({ at: e.at, state: e.state.split('.')[0] ?? '' }));
      for (let t = 0; t <= 10_000; t += 250) expect(stateAt(full, T0 + t)).toBe(stateAt(reference, T0 + t));
      if (full.length <= maxPoints) return;
      // thinned: over each bucket the strip says the state the journal spent the most time in there
      const width = Math.max(window.bucketMs, Math.ceil(10_000 / maxPoints));
      for (let b0 = 0; b0 < 10_000; b0 += width) {
        const spent = new Map<string, number>();
        for (let t = b0; t < Math.min(10_000, b0 + width); t += 5) {
          const s = stateAt(full, T0 + t);
          if (s !== null) spent.set(s, (spent.get(s) ?? 0) + 5);
        }
        const most = Math.max(0, ...spent.values());
        if (most === 0) continue;
        // sampled every 5 ms: a state within 5 ms of the most is as good an answer
        const dominant = [...spent.entries()].filter(([, n]) => n >= most - 5).map(([s]) => s);
        expect(dominant).toContain(stateAt(strip, T0 + Math.min(10_000, b0 + width) - 1));
      }
    },
  );
});
