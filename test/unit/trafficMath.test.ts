import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import {
  alertLevel,
  counterDelta,
  currentUse,
  enforcement,
  formatBytes,
  kernelLimit,
  l3Ratio,
  parseBytes,
  periodEnd,
  periodStart,
  readingMinute,
  type QuotaState,
} from '../../src/fleet/trafficMath.js';

const at = (iso: string) => new Date(iso);
const NO_LIMIT = Number.MAX_SAFE_INTEGER;

describe('quota periods (UTC)', () => {
  it('a day runs from 00:00 UTC', () => {
    expect(periodStart('day', at('2026-03-15T23:59:59.999Z'))).toEqual(at('2026-03-15T00:00:00Z'));
    expect(periodStart('day', at('2026-03-16T00:00:00Z'))).toEqual(at('2026-03-16T00:00:00Z'));
    expect(periodEnd('day', at('2026-03-15T00:00:00Z'))).toEqual(at('2026-03-16T00:00:00Z'));
  });

  it('a month runs from the 1st, or from its start day, across year ends and short months', () => {
    expect(periodStart('month', at('2026-03-15T12:00:00Z'))).toEqual(at('2026-03-01T00:00:00Z'));
    expect(periodEnd('month', at('2026-03-01T00:00:00Z'))).toEqual(at('2026-04-01T00:00:00Z'));
    expect(periodStart('month', at('2026-03-14T23:59:59Z'), 15)).toEqual(at('2026-02-15T00:00:00Z'));
    expect(periodStart('month', at('2026-03-15T00:00:00Z'), 15)).toEqual(at('2026-03-15T00:00:00Z'));
    expect(periodStart('month', at('2026-01-10T00:00:00Z'), 28)).toEqual(at('2025-12-28T00:00:00Z'));
    expect(periodEnd('month', at('2025-12-28T00:00:00Z'), 28)).toEqual(at('2026-01-28T00:00:00Z'));
    // February is never skipped: day 28 exists in every month
    expect(periodEnd('month', at('2026-01-28T00:00:00Z'), 28)).toEqual(at('2026-02-28T00:00:00Z'));
    expect(periodEnd('month', at('2026-12-01T00:00:00Z'))).toEqual(at('2027-01-01T00:00:00Z'));
  });

  it('total never rolls over: it starts when the quota was set', () => {
    const since = at('2026-01-05T10:11:12Z');
    expect(periodStart('total', at('2030-01-01T00:00:00Z'), 1, since)).toEqual(since);
    expect(periodEnd('total', since)).toBeNull();
  });

  test.prop([
    fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01') }),
    fc.integer({ min: 1, max: 28 }),
  ])('every instant is in exactly one month period, and periods are contiguous', (d, day) => {
    fc.pre(!Number.isNaN(d.getTime()));
    const start = periodStart('month', d, day);
    const end = periodEnd('month', start, day)!;
    expect(start.getTime()).toBeLessThanOrEqual(d.getTime());
    expect(end.getTime()).toBeGreaterThan(d.getTime());
    expect(periodStart('month', end, day)).toEqual(end);
    expect(start.getUTCDate()).toBe(day);
  });

  it('currentUse: a period that began after the stored one has used nothing yet', () => {
    const q = {
      period: 'day' as const,
      monthStartDay: 1,
      periodStart: at('2026-03-15T08:00:00Z'),
      used: 500,
    };
    expect(currentUse(q, at('2026-03-15T20:00:00Z'))).toEqual({
      start: at('2026-03-15T08:00:00Z'),
      end: at('2026-03-16T00:00:00Z'),
      used: 500,
    });
    expect(currentUse(q, at('2026-03-16T00:00:01Z'))).toEqual({
      start: at('2026-03-16T00:00:00Z'),
      end: at('2026-03-17T00:00:00Z'),
      used: 0,
    });
  });
});

describe('counter deltas', () => {
  const v = (token: string, download: number, upload: number) => ({ token, download, upload });

  it('the growth of the same instance', () => {
    expect(counterDelta(v('a1', 100, 10), v('a1', 250, 15))).toEqual({
      download: 150,
      upload: 5,
      restarted: false,
    });
  });

  it('a counter that went down was reset: its new value is the delta', () => {
    expect(counterDelta(v('a1', 100, 10), v('a1', 40, 12))).toEqual({
      download: 40,
      upload: 12,
      restarted: true,
    });
  });

  it('a new instance (counters created again) counts from zero', () => {
    expect(counterDelta(v('a1', 100, 10), v('b2', 700, 70))).toEqual({
      download: 700,
      upload: 70,
      restarted: true,
    });
  });

  it('nothing before: everything the instance counted', () => {
    expect(counterDelta(undefined, v('a1', 5, 6))).toEqual({ download: 5, upload: 6, restarted: false });
  });

  test.prop([fc.array(fc.tuple(fc.nat(1e9), fc.nat(1e9), fc.boolean()), { minLength: 1, maxLength: 50 })])(
    'summing deltas over growths and (lower) resets counts every byte after each reset once',
    (steps) => {
      let counter = { token: 't0', download: 0, upload: 0 };
      let previous: typeof counter | undefined;
      let sum = 0;
      let truth = 0;
      for (const [d, u, reset] of steps) {
        if (reset && counter.download > 0) {
          // reset to zero, then it grew to less than before: the reading shows a lower value
          const grown = d % counter.download;
          counter = { token: counter.token, download: grown, upload: u };
          truth += grown + u;
        } else {
          counter = { ...counter, download: counter.download + d, upload: counter.upload + u };
          truth += d + u;
        }
        const delta = counterDelta(previous, counter);
        sum += delta.download + delta.upload;
        previous = { ...counter };
      }
      expect(sum).toBe(truth);
    },
  );
});

describe('which minute a reading belongs to', () => {
  it('the middle of the interval since the previous reading', () => {
    expect(readingMinute(at('2026-03-15T10:00:00.200Z'), at('2026-03-15T10:01:00.100Z'))).toEqual(
      at('2026-03-15T10:00:00Z'),
    );
    expect(readingMinute(undefined, at('2026-03-15T10:01:30Z'))).toEqual(at('2026-03-15T10:01:00Z'));
    // the reading that closes a day puts its bytes in that day
    expect(readingMinute(at('2026-03-15T23:59:00.5Z'), at('2026-03-16T00:00:00.4Z'))).toEqual(
      at('2026-03-15T23:59:00Z'),
    );
  });
});

describe('the kernel quota limit', () => {
  it('what the kernel used plus the payload left times the L3 ratio', () => {
    expect(kernelLimit({ quota: 1_000_000, usedPayload: 400_000, kernelUsed: 410_000, ratio: 1.05 })).toBe(
      410_000 + 630_000,
    );
  });

  it('nothing left: the next packet trips it', () => {
    expect(kernelLimit({ quota: 1_000, usedPayload: 1_000, kernelUsed: 5_000, ratio: 1.2 })).toBe(5_000);
    expect(kernelLimit({ quota: 1_000, usedPayload: 2_000, kernelUsed: 0, ratio: 1 })).toBe(1);
  });

  it('the ratio comes from enough traffic, else the fallback; never below 1', () => {
    expect(l3Ratio(1_050_000, 1_000_000)).toBeCloseTo(1.05);
    expect(l3Ratio(100, 50, 1.3)).toBe(1.3);
    expect(l3Ratio(900_000, 1_000_000)).toBe(1);
  });

  it('alerts at 80 % and 100 %', () => {
    expect(alertLevel(79, 100)).toBe(0);
    expect(alertLevel(80, 100)).toBe(80);
    expect(alertLevel(100, 100)).toBe(100);
  });
});

describe('enforcement', () => {
  const base: QuotaState = {
    bytes: 1_000_000,
    period: 'month',
    monthStartDay: 1,
    periodStart: at('2026-03-01T00:00:00Z'),
    used: 500_000,
    expiresAt: null,
    cursor: { instance: 'aaaa0000', download: 9_000, upload: 1_000 },
  };
  const now = at('2026-03-10T12:00:00Z');

  it('stored use plus what the kernel counted since the last stored sample', () => {
    const e = enforcement(
      base,
      { token: 'aaaa0000', download: 109_000, upload: 1_000, quotaUsed: 200_000, quotaLimit: NO_LIMIT },
      now,
      1,
      NO_LIMIT,
    );
    expect(e.usedPayload).toBe(600_000);
    expect(e.limit).toBe(200_000 + 400_000);
    expect(e.closed).toBeNull();
    expect(e.level).toBe(0);
    expect(e.nextChangeAt).toEqual(at('2026-04-01T00:00:00Z'));
  });

  it('counters of another instance than the cursor: all of them are unrecorded', () => {
    const e = enforcement(
      base,
      { token: 'bbbb0000', download: 300_000, upload: 0, quotaUsed: 0, quotaLimit: NO_LIMIT },
      now,
      1,
      NO_LIMIT,
    );
    expect(e.usedPayload).toBe(800_000);
    expect(e.level).toBe(80);
  });

  it('at the quota: closed (its ports in the closed set), the limit left as it is', () => {
    const e = enforcement(
      base,
      { token: 'aaaa0000', download: 509_000, upload: 1_000, quotaUsed: 700_000, quotaLimit: NO_LIMIT },
      now,
      1,
      NO_LIMIT,
    );
    expect(e.closed).toBe('quota_exceeded');
    expect(e.limit).toBe(NO_LIMIT);
    expect(e.reset).toBe(false);
    expect(e.level).toBe(100);
  });

  it('stopped by the kernel a little before the quota (the ratio was estimated): spent, not reopened for crumbs', () => {
    const kernel = {
      token: 'aaaa0000',
      download: 9_000 + 490_000,
      upload: 1_000,
      quotaUsed: 1_000_000,
      quotaLimit: 1_000_000,
    };
    // 10 000 bytes left of 1 MB: within the tolerance (64 KiB at least)
    const e = enforcement(base, kernel, now, 1.01, NO_LIMIT);
    expect(e).toMatchObject({ closed: 'quota_exceeded', limit: 1_000_000, level: 100 });
    // far from it (a bad estimate): reopened for what is left, calibrated
    const big = { ...base, bytes: 100_000_000 };
    // (its use reset: the kernel reports at most the limit, and dropped packets used more)
    expect(enforcement(big, kernel, now, 1.01, NO_LIMIT)).toMatchObject({
      closed: null,
      reset: true,
      limit: Math.ceil(99_010_000 * 1.01),
    });
    // ... unless nothing got through since the last look
    expect(enforcement(big, kernel, now, 1.01, NO_LIMIT, true)).toMatchObject({ closed: 'quota_exceeded' });
  });

  it('a new period reopens it: its use reset, the whole quota from zero', () => {
    const e = enforcement(
      { ...base, used: 1_000_000 },
      { token: 'aaaa0000', download: 9_000, upload: 1_000, quotaUsed: 900_000, quotaLimit: 900_000 },
      at('2026-04-01T00:00:01Z'),
      1,
      NO_LIMIT,
    );
    expect(e.closed).toBeNull();
    expect(e.usedPayload).toBe(0);
    expect(e.reset).toBe(true);
    expect(e.limit).toBe(1_000_000);
  });

  it('past its expiry: closed whatever the quota; before it, the expiry is the next change', () => {
    expect(
      enforcement({ ...base, expiresAt: at('2026-03-10T11:00:00Z') }, undefined, now, 1, NO_LIMIT),
    ).toMatchObject({ closed: 'expired' });
    expect(
      enforcement(
        { ...base, bytes: null, period: null, expiresAt: at('2026-03-10T13:00:00Z') },
        undefined,
        now,
        1,
        NO_LIMIT,
      ),
    ).toMatchObject({ closed: null, limit: NO_LIMIT, nextChangeAt: at('2026-03-10T13:00:00Z') });
  });
});

describe('sizes', () => {
  it('parses decimal and binary units', () => {
    expect(parseBytes('10GB')).toBe(10e9);
    expect(parseBytes('500 MiB')).toBe(500 * 2 ** 20);
    expect(parseBytes('1.5T')).toBe(1.5e12);
    expect(parseBytes('12345')).toBe(12345);
    for (const bad of ['', 'GB', '-1', '10XB', '0', '1e9', '99999999999999999TB'])
      expect(parseBytes(bad)).toBeUndefined();
  });

  it('formats for people', () => {
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1_234_567)).toBe('1.23 MB');
    expect(formatBytes(10e9)).toBe('10.0 GB');
  });
});
