import { fc, test } from '@fast-check/vitest';
import { afterEach, beforeEach, describe, expect, vi } from 'vitest';
import { nextDue, type RotationSchedule, type ScheduleFacts } from '../../src/fleet/rotationSchedule.js';
import { RotationScheduler } from '../../src/fleet/rotationScheduler.js';

const schedule = fc
  .integer({ min: 60, max: 1_800 })
  .chain((intervalSeconds) =>
    fc.record({ intervalSeconds: fc.constant(intervalSeconds), jitterSeconds: fc.nat(intervalSeconds - 1) }),
  );

describe('nextDue', () => {
  test.prop([
    fc.integer({ min: 0, max: 2 ** 40 }),
    schedule,
    fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
  ])('is the basis + interval ± jitter', (basis, s, r) => {
    const due = nextDue(basis, s, () => r);
    expect(due).toBeGreaterThanOrEqual(basis + (s.intervalSeconds - s.jitterSeconds) * 1000);
    expect(due).toBeLessThanOrEqual(basis + (s.intervalSeconds + s.jitterSeconds) * 1000);
  });
});

/**
 * A model of one host over a fake clock: the real RotationScheduler over an in-memory store whose
 * command queue behaves like modem_commands (one pending rotate per modem, claimed one at a time per
 * modem after the minimum interval, running for a while), modems that go offline and come back,
 * operators rotating too, and a restart (a new scheduler over the same store) at a random moment.
 */
interface ModelCommand {
  id: number;
  imei: string;
  by: string;
  status: 'pending' | 'running' | 'done' | 'failed';
  claimedMs?: number;
  finishedMs?: number;
  endsMs?: number;
}

const STEP_MS = 1_000;
const POLL_MS = 5_000;
const MIN_INTERVAL_MS = 30_000;
const HOURS = 3;

const modemSpec = fc.record({
  /** Its own schedule, off (never rotated on a schedule, whatever the farm default), or none. */
  own: fc.oneof(fc.constant(undefined), schedule, fc.constant('off' as const)),
  /** Offline windows: [start minute, length minutes]. */
  offline: fc.array(fc.tuple(fc.nat(HOURS * 60), fc.integer({ min: 1, max: 40 })), { maxLength: 3 }),
  /** Operator rotations at these minutes. */
  operator: fc.array(fc.nat(HOURS * 60), { maxLength: 3 }),
  rotationSeconds: fc.integer({ min: 1, max: 25 }),
});

describe('the rotation scheduler (model, fake clock)', () => {
  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  test.prop(
    [
      fc.array(modemSpec, { minLength: 1, maxLength: 3 }),
      schedule,
      fc.integer({ min: 1, max: HOURS * 60 - 1 }),
      fc.integer(),
    ],
    { numRuns: 25 },
  )(
    'never two rotations of a modem at once; due modems rotate or are skipped when offline; a restart continues without a burst',
    async (specs, farmDefault, restartMinute, seed) => {
      const t0 = Date.UTC(2026, 0, 1);
      vi.setSystemTime(t0);
      const imeis = specs.map((_, i) => `35000000000000${i}`);
      const sinceMs = t0;
      const commands: ModelCommand[] = [];
      const violations: string[] = [];
      const offline = (i: number, t: number): boolean =>
        (specs[i]?.offline ?? []).some(([m, len]) => t >= t0 + m * 60_000 && t < t0 + (m + len) * 60_000);
      const busy = (imei: string): boolean =>
        commands.some((c) => c.imei === imei && (c.status === 'pending' || c.status === 'running'));
      const lastFinish = (imei: string): number | null =>
        commands
          .filter((c) => c.imei === imei && c.finishedMs !== undefined)
          .reduce<number | null>((max, c) => Math.max(max ?? -Infinity, c.finishedMs ?? -Infinity), null);
      let nextId = 1;
      let instanceStart = t0;
      const store = {
        scheduleFacts: (): Promise<{ nowMs: number; facts: ScheduleFacts[] }> =>
          Promise.resolve({
            nowMs: Date.now(),
            facts: imeis.map((imei, i) => {
              const own = specs[i]?.own;
              return {
                imei,
                state: offline(i, Date.now()) ? 'recovering' : 'online',
                own: own === 'off' ? ('off' as const) : own ? { ...own, sinceMs } : null,
                lastRotationMs: lastFinish(imei),
                busy: busy(imei),
              };
            }),
          }),
        insertCommand: (imei: string, _kind: string, by: string): Promise<number> => {
          const pending = commands.find((c) => c.imei === imei && c.status === 'pending');
          if (by === 'schedule') {
            if (busy(imei)) violations.push(`${imei}: scheduled while a rotate was pending or running`);
            check(imei, 'rotate');
          }
          if (pending) return Promise.resolve(pending.id);
          commands.push({ id: nextId, imei, by, status: 'pending' });
          return Promise.resolve(nextId++);
        },
        recordSkippedRotation: (imei: string): Promise<number> => {
          check(imei, 'skip');
          const now = Date.now();
          commands.push({ id: nextId, imei, by: 'schedule', status: 'failed', finishedMs: now });
          return Promise.resolve(nextId++);
        },
      };
      const ownOf = (i: number): RotationSchedule | undefined => {
        const own = specs[i]?.own;
        return own === 'off' ? undefined : own;
      };
      const scheduleOf = (i: number): RotationSchedule => ownOf(i) ?? farmDefault;
      const basis = (i: number): number => {
        const imei = imeis[i] ?? '';
        const last = lastFinish(imei);
        return ownOf(i) ? Math.max(last ?? sinceMs, sinceMs) : (last ?? instanceStart);
      };
      /** Every scheduled action comes interval ± jitter after the basis: never early (no burst). */
      function check(imei: string, action: 'rotate' | 'skip'): void {
        const i = imeis.indexOf(imei);
        const now = Date.now();
        if (specs[i]?.own === 'off') violations.push(`${imei}: ${action} although its schedule is off`);
        const s = scheduleOf(i);
        if (now < basis(i) + (s.intervalSeconds - s.jitterSeconds) * 1000 - 1)
          violations.push(
            `${imei}: ${action} at ${now - t0} ms, before basis ${basis(i) - t0} + ${s.intervalSeconds - s.jitterSeconds} s`,
          );
        if ((action === 'skip') !== offline(i, now))
          violations.push(
            `${imei}: ${action} at ${now - t0} ms while ${offline(i, now) ? 'offline' : 'online'}`,
          );
      }
      let rnd = seed;
      const random = (): number => {
        rnd = (Math.imul(rnd, 1_103_515_245) + 12_345) | 0;
        return ((rnd >>> 0) % 1_000_000) / 1_000_000;
      };
      const newScheduler = (): RotationScheduler =>
        new RotationScheduler({ store, farmDefault, pollMs: POLL_MS, random });

      let scheduler = newScheduler();
      scheduler.start();
      for (let t = t0; t < t0 + HOURS * 3_600_000; t += STEP_MS) {
        await vi.advanceTimersByTimeAsync(STEP_MS);
        const now = Date.now();
        if (now === t0 + restartMinute * 60_000) {
          await scheduler.stop();
          scheduler = newScheduler();
          instanceStart = now;
          scheduler.start();
        }
        for (const [i, imei] of imeis.entries()) {
          if ((specs[i]?.operator ?? []).some((m) => t0 + m * 60_000 === now))
            await store.insertCommand(imei, 'rotate', 'operator');
          // the command queue: the running rotate ends; the pending one is claimed when allowed
          for (const c of commands.filter((x) => x.imei === imei && x.status === 'running'))
            if (now >= (c.endsMs ?? 0)) Object.assign(c, { status: 'done', finishedMs: now });
          const running = commands.filter((x) => x.imei === imei && x.status === 'running');
          const lastClaimed = commands
            .filter((x) => x.imei === imei && x.claimedMs !== undefined && x.finishedMs !== undefined)
            .reduce((max, x) => Math.max(max, x.finishedMs ?? 0), -Infinity);
          const pending = commands.find((x) => x.imei === imei && x.status === 'pending');
          if (pending && running.length === 0 && now - lastClaimed >= MIN_INTERVAL_MS)
            Object.assign(pending, {
              status: 'running',
              claimedMs: now,
              endsMs: now + (specs[i]?.rotationSeconds ?? 1) * 1000,
            });
          if (commands.filter((x) => x.imei === imei && x.status === 'running').length > 1)
            violations.push(`${imei}: two rotations at once at ${now - t0} ms`);
          if (commands.filter((x) => x.imei === imei && x.status === 'pending').length > 1)
            violations.push(`${imei}: two pending rotates at ${now - t0} ms`);
          // a modem not busy is never left overdue: it rotates, or is skipped and recorded
          if (specs[i]?.own === 'off') continue;
          const s = scheduleOf(i);
          const latest = basis(i) + (s.intervalSeconds + s.jitterSeconds) * 1000 + POLL_MS + 2 * STEP_MS;
          if (!busy(imei) && now > latest) violations.push(`${imei}: overdue at ${now - t0} ms`);
        }
        if (violations.length) break;
      }
      await scheduler.stop();
      expect(violations).toEqual([]);
      // it did its job: every modem not off had a scheduled rotation or skip in three hours
      for (const [i, imei] of imeis.entries())
        expect(commands.some((c) => c.imei === imei && c.by === 'schedule')).toBe(specs[i]?.own !== 'off');
    },
  );
});
