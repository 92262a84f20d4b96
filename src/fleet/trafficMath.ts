/**
 * The arithmetic of traffic accounting and quotas, pure (no I/O, no clock of its own): quota
 * periods in UTC, the delta between two counter readings, which minute a reading belongs to, and
 * the kernel quota's limit that makes a port stop at its payload quota. The SQL side
 * (`record_traffic`, `traffic_period_start` in sql/0017_traffic.sql) applies the same rules.
 */

export const QUOTA_PERIODS = ['day', 'month', 'total'] as const;
export type QuotaPeriod = (typeof QUOTA_PERIODS)[number];

export const isQuotaPeriod = (v: unknown): v is QuotaPeriod =>
  typeof v === 'string' && (QUOTA_PERIODS as readonly string[]).includes(v);

/** Days a month may start on (a month always has them). */
export const MONTH_START_DAYS = { min: 1, max: 28 } as const;

const DAY_MS = 86_400_000;

/**
 * The start of the period that contains `at`, in UTC: a day from 00:00; a month from 00:00 of day
 * `monthStartDay` (1-28); `total` never rolls over: it starts at `since` (the quota's own start).
 */
export function periodStart(period: QuotaPeriod, at: Date, monthStartDay = 1, since?: Date): Date {
  const y = at.getUTCFullYear();
  const m = at.getUTCMonth();
  switch (period) {
    case 'day':
      return new Date(Date.UTC(y, m, at.getUTCDate()));
    case 'month': {
      const start = Date.UTC(y, m, monthStartDay);
      return new Date(at.getTime() >= start ? start : Date.UTC(y, m - 1, monthStartDay));
    }
    case 'total':
      return since ?? new Date(0);
  }
}

/** When the period that started at `start` ends (the next one's start); null for `total`. */
export function periodEnd(period: QuotaPeriod, start: Date, monthStartDay = 1): Date | null {
  switch (period) {
    case 'day':
      return new Date(start.getTime() + DAY_MS);
    case 'month': {
      const natural = periodStart('month', start, monthStartDay);
      return new Date(Date.UTC(natural.getUTCFullYear(), natural.getUTCMonth() + 1, monthStartDay));
    }
    case 'total':
      return null;
  }
}

/** A quota as stored: its period, the start of the period its `used` counts, and `used`. */
export interface QuotaUse {
  period: QuotaPeriod;
  monthStartDay: number;
  /** The start of the counted period (a period's natural start, or a reset within it). */
  periodStart: Date;
  used: number;
}

/**
 * The period in force at `now` and what it has used: a period that began after the stored one
 * (nothing was recorded in it yet) has used nothing.
 */
export function currentUse(q: QuotaUse, now: Date): { start: Date; end: Date | null; used: number } {
  const natural = periodStart(q.period, now, q.monthStartDay, q.periodStart);
  if (natural.getTime() > q.periodStart.getTime())
    return { start: natural, end: periodEnd(q.period, natural, q.monthStartDay), used: 0 };
  return {
    start: q.periodStart,
    end: periodEnd(
      q.period,
      periodStart(q.period, q.periodStart, q.monthStartDay, q.periodStart),
      q.monthStartDay,
    ),
    used: q.used,
  };
}

/**
 * The minute a reading's bytes are put in: the one holding the middle of the interval since the
 * previous reading (readings come every minute, so that is the minute the bytes went through).
 */
export function readingMinute(previousAt: Date | undefined, at: Date): Date {
  const middle = previousAt && previousAt < at ? (previousAt.getTime() + at.getTime()) / 2 : at.getTime();
  return new Date(Math.floor(middle / 60_000) * 60_000);
}

/** Cumulative counters of one counter instance (a part of the traffic table). */
export interface CounterValue {
  token: string;
  download: number;
  upload: number;
}

/**
 * Bytes since `previous`: the growth when it is the same instance and neither counter went down;
 * otherwise the counters started from zero since (a new instance: the part or table was created
 * again; or a reset: lower than before), so the new values are the delta.
 */
export function counterDelta(
  previous: CounterValue | undefined,
  now: CounterValue,
): { download: number; upload: number; restarted: boolean } {
  if (
    previous &&
    previous.token === now.token &&
    now.download >= previous.download &&
    now.upload >= previous.upload
  )
    return {
      download: now.download - previous.download,
      upload: now.upload - previous.upload,
      restarted: false,
    };
  return { download: now.download, upload: now.upload, restarted: previous !== undefined };
}

/** L3 bytes per payload byte, from a stretch of traffic; `fallback` when it is too little to tell. */
export function l3Ratio(l3: number, payload: number, fallback = 1): number {
  if (payload < 64 * 1024 || l3 <= 0) return fallback;
  return Math.min(4, Math.max(1, l3 / payload));
}

/**
 * The kernel quota's limit (its currency is L3 bytes, counted from when the part was created) that
 * trips when the payload used in the period reaches `quota`: what the kernel has used now plus the
 * payload still allowed times the measured L3/payload ratio. Nothing left: the next packet trips.
 */
export function kernelLimit(input: {
  quota: number;
  usedPayload: number;
  kernelUsed: number;
  ratio: number;
}): number {
  const left = input.quota - input.usedPayload;
  if (left <= 0) return Math.max(1, input.kernelUsed);
  return Math.min(Number.MAX_SAFE_INTEGER, input.kernelUsed + Math.ceil(left * Math.max(1, input.ratio)));
}

/** Alert levels: 80 % and 100 % of the quota. */
export function alertLevel(used: number, quota: number): 0 | 80 | 100 {
  if (used >= quota) return 100;
  if (used * 5 >= quota * 4) return 80;
  return 0;
}

const UNITS: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  k: 1e3,
  m: 1e6,
  g: 1e9,
  t: 1e12,
};

/** `10GB`, `500MiB`, `1.5T`, `12345` → bytes (decimal and binary units); undefined when not a size. */
export function parseBytes(text: string): number | undefined {
  const m = /^(\d{1,16}(?:\.\d{1,6})?)\s*([A-Za-z]{0,3})$/.exec(text.trim());
  if (!m) return undefined;
  const unit = UNITS[(m[2] ?? '').toLowerCase() || 'b'];
  if (unit === undefined) return undefined;
  const bytes = Math.round(Number(m[1]) * unit);
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : undefined;
}

/** Bytes for people: `1.23 GB` (decimal units, as carriers bill). */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB', 'PB'];
  let v = bytes;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}

/**
 * What a port stopped by the kernel may have left of its quota and still count as spent: 0.1 %, at
 * least 64 KiB (a burst of segments). More left: the port reopens for it, with the ratio measured
 * meanwhile, until it is within this.
 */
export function quotaTolerance(quota: number): number {
  return Math.max(64 * 1024, Math.floor(quota / 1000));
}

/** A quota as the enforcer holds it (sql/0016_quotas.sql, with the host's traffic cursor). */
export interface QuotaState {
  bytes: number | null;
  period: QuotaPeriod | null;
  monthStartDay: number;
  periodStart: Date;
  used: number;
  expiresAt: Date | null;
  /** The last sample stored of this modem from this host. */
  cursor: { instance: string; download: number; upload: number } | null;
}

/** The kernel's view of one modem now (its part of the traffic table). */
export interface KernelView {
  token: string;
  download: number;
  upload: number;
  /** What its quota has used (the kernel reports at most the limit) and the limit. */
  quotaUsed: number;
  quotaLimit: number;
}

export interface Enforcement {
  /** The kernel quota's limit to set (`noLimit`: none). */
  limit: number;
  /** The quota's use goes back to zero first (it stopped the port, which reopens): `limit` counts from zero. */
  reset: boolean;
  /** Why the port is closed (null: it serves). */
  closed: 'expired' | 'quota_exceeded' | null;
  /** Payload used in the period now (null without a byte quota). */
  usedPayload: number | null;
  level: 0 | 80 | 100;
  /** The start of the period in force (null without a byte quota). */
  periodStart: Date | null;
  /** When something changes by itself: the expiry, or the period's end. */
  nextChangeAt: Date | null;
}

/**
 * What the kernel should enforce for one modem now: closed at its expiry; otherwise, with a byte
 * quota, closed when it is spent, else the limit that stops the port at the quota: what the period
 * used as stored, plus what the kernel counted since the last stored sample, against the quota.
 * The kernel's quota stops the port a little before or after (it counts L3 bytes; the ratio is
 * estimated): stopped within the tolerance of the quota, or again with nothing through since it
 * was reopened (`stalled`), the quota is spent; stopped earlier, it reopens for the rest with its
 * use reset (packets it dropped meanwhile used it too, and the kernel reports at most the limit).
 */
export function enforcement(
  q: QuotaState,
  kernel: KernelView | undefined,
  now: Date,
  ratio: number,
  noLimit: number,
  stalled = false,
): Enforcement {
  const expired = q.expiresAt !== null && q.expiresAt.getTime() <= now.getTime();
  const upcoming = q.expiresAt !== null && !expired ? q.expiresAt : null;
  const kernelOver = kernel !== undefined && kernel.quotaUsed >= kernel.quotaLimit;
  if (q.bytes === null || q.period === null)
    return {
      limit: noLimit,
      reset: kernelOver,
      closed: expired ? 'expired' : null,
      usedPayload: null,
      level: 0,
      periodStart: null,
      nextChangeAt: upcoming,
    };
  const use = currentUse(
    { period: q.period, monthStartDay: q.monthStartDay, periodStart: q.periodStart, used: q.used },
    now,
  );
  const unrecorded = kernel
    ? counterDelta(
        q.cursor
          ? { token: q.cursor.instance, download: q.cursor.download, upload: q.cursor.upload }
          : undefined,
        kernel,
      )
    : { download: 0, upload: 0 };
  const usedPayload = use.used + unrecorded.download + unrecorded.upload;
  const left = q.bytes - usedPayload;
  const exceeded = left <= 0 || (kernelOver && (stalled || left <= quotaTolerance(q.bytes)));
  const ends = [upcoming, use.end].filter((d): d is Date => d !== null);
  const base = {
    usedPayload,
    level: exceeded ? 100 : alertLevel(usedPayload, q.bytes),
    periodStart: use.start,
    nextChangeAt: ends.length ? new Date(Math.min(...ends.map((d) => d.getTime()))) : null,
  } as const;
  if (exceeded) return { ...base, limit: kernel?.quotaLimit ?? 1, reset: false, closed: 'quota_exceeded' };
  const reopen = kernelOver;
  return {
    ...base,
    limit: reopen
      ? Math.min(Number.MAX_SAFE_INTEGER, Math.ceil(left * Math.max(1, ratio)))
      : kernelLimit({ quota: q.bytes, usedPayload, kernelUsed: kernel?.quotaUsed ?? 0, ratio }),
    reset: reopen,
    closed: expired ? 'expired' : null,
  };
}
