import type { Sql } from 'postgres';
import {
  MONTH_START_DAYS,
  QUOTA_PERIODS,
  currentUse,
  isQuotaPeriod,
  type QuotaPeriod,
} from '../fleet/trafficMath.js';
import { ModemfleetError } from '../util/errors.js';
import { errorCode, SQLSTATE } from './pgErrors.js';
import { IMEI_PATTERN } from './types.js';

/**
 * A modem's byte quota per period and its expiry (sql/0016_quotas.sql). Set, raised, reset and
 * cleared here (API, CLI); enforced by the owning host (src/fleet/trafficMonitor.ts), which also
 * records here why a port is closed and which alert level it raised.
 */
export type ClosedReason = 'quota_exceeded' | 'expired';

export interface StoredQuota {
  imei: string;
  bytes: number | null;
  period: QuotaPeriod | null;
  monthStartDay: number;
  periodStart: Date;
  used: number;
  alertLevel: 0 | 80 | 100;
  expiresAt: Date | null;
  closedReason: ClosedReason | null;
  closedAt: Date | null;
  updatedAt: Date;
  updatedBy: string;
}

/** The quota as the API shows it: the period in force now and what is left of it. */
export interface QuotaView {
  imei: string;
  bytes: number | null;
  period: QuotaPeriod | null;
  monthStartDay: number;
  periodStart: Date | null;
  periodEnd: Date | null;
  used: number | null;
  remaining: number | null;
  expiresAt: Date | null;
  /** Why the port is closed now (null: it serves). */
  closed: ClosedReason | null;
  closedAt: Date | null;
  updatedAt: Date;
  updatedBy: string;
}

export const MAX_QUOTA_BYTES = Number.MAX_SAFE_INTEGER;

interface QuotaRow {
  imei: string;
  bytes: string | null;
  period: string | null;
  month_start_day: number;
  period_start: Date;
  used: string;
  alert_level: number;
  expires_at: Date | null;
  closed_reason: string | null;
  closed_at: Date | null;
  updated_at: Date;
  updated_by: string;
}

const COLUMNS =
  'imei, bytes::text, period, month_start_day, period_start, used::text, alert_level, expires_at, closed_reason, closed_at, updated_at, updated_by';

export const toQuota = (r: QuotaRow): StoredQuota => ({
  imei: r.imei,
  bytes: r.bytes === null ? null : Number(r.bytes),
  period: isQuotaPeriod(r.period) ? r.period : null,
  monthStartDay: r.month_start_day,
  periodStart: r.period_start,
  used: Number(r.used),
  alertLevel: r.alert_level === 100 ? 100 : r.alert_level === 80 ? 80 : 0,
  expiresAt: r.expires_at,
  closedReason:
    r.closed_reason === 'quota_exceeded' || r.closed_reason === 'expired' ? r.closed_reason : null,
  closedAt: r.closed_at,
  updatedAt: r.updated_at,
  updatedBy: r.updated_by,
});

export function quotaView(q: StoredQuota, now = new Date()): QuotaView {
  const use =
    q.bytes !== null && q.period !== null
      ? currentUse(
          { period: q.period, monthStartDay: q.monthStartDay, periodStart: q.periodStart, used: q.used },
          now,
        )
      : null;
  return {
    imei: q.imei,
    bytes: q.bytes,
    period: q.period,
    monthStartDay: q.monthStartDay,
    periodStart: use?.start ?? null,
    periodEnd: use?.end ?? null,
    used: use?.used ?? null,
    remaining: use && q.bytes !== null ? Math.max(0, q.bytes - use.used) : null,
    expiresAt: q.expiresAt,
    closed: q.closedReason,
    closedAt: q.closedAt,
    updatedAt: q.updatedAt,
    updatedBy: q.updatedBy,
  };
}

const invalid = (message: string): ModemfleetError => new ModemfleetError('invalid_quota', message);
const by = (who: string): string => who.slice(0, 128) || 'unknown';

function checkImei(imei: string): void {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
}

/** `{ bytes, period, monthStartDay? }` checked; every problem in one message (`invalid_quota`). */
export function parseQuotaSetting(input: unknown): {
  bytes: number;
  period: QuotaPeriod;
  monthStartDay: number;
} {
  if (typeof input !== 'object' || input === null || Array.isArray(input))
    throw invalid('the quota must be an object: {"bytes": 10000000000, "period": "month"}');
  const o = input as Record<string, unknown>;
  const problems: string[] = [];
  for (const key of Object.keys(o))
    if (!['bytes', 'period', 'monthStartDay'].includes(key))
      problems.push(`${key.slice(0, 32)}: unknown setting`);
  const { bytes, period, monthStartDay = 1 } = o;
  if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 1)
    problems.push(`bytes: must be a whole number of bytes from 1 to ${MAX_QUOTA_BYTES}`);
  if (!isQuotaPeriod(period)) problems.push(`period: must be one of ${QUOTA_PERIODS.join(', ')}`);
  if (
    typeof monthStartDay !== 'number' ||
    !Number.isInteger(monthStartDay) ||
    monthStartDay < MONTH_START_DAYS.min ||
    monthStartDay > MONTH_START_DAYS.max
  )
    problems.push(`monthStartDay: must be a day from ${MONTH_START_DAYS.min} to ${MONTH_START_DAYS.max}`);
  else if (monthStartDay !== 1 && period !== 'month') problems.push('monthStartDay: only for period "month"');
  if (problems.length) throw invalid(problems.join('; '));
  return { bytes: bytes as number, period: period as QuotaPeriod, monthStartDay: monthStartDay as number };
}

async function withModem<T>(imei: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (errorCode(err) === SQLSTATE.foreignKeyViolation)
      throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`, { cause: err });
    throw err;
  }
}

export async function getQuota(sql: Sql, imei: string): Promise<StoredQuota | null> {
  const [row] = await sql<QuotaRow[]>`select ${sql.unsafe(COLUMNS)} from modem_quotas where imei = ${imei}`;
  return row ? toQuota(row) : null;
}

/**
 * Sets a modem's byte quota (`invalid_quota`, `unknown_modem`; nothing changes then). The same
 * period: only the limit changes (what the period used stays; a raise reopens the port). A new or
 * another period: it counts from now. Alert levels above what the new limit reaches are re-armed.
 */
export async function setQuota(
  sql: Sql,
  imei: string,
  input: unknown,
  updatedBy: string,
): Promise<StoredQuota> {
  checkImei(imei);
  const q = parseQuotaSetting(input);
  return withModem(imei, async () => {
    const [row] = await sql<QuotaRow[]>`
      insert into modem_quotas as m (imei, bytes, period, month_start_day, updated_by)
      values (${imei}, ${q.bytes}, ${q.period}, ${q.monthStartDay}, ${by(updatedBy)})
      on conflict (imei) do update set
        bytes = excluded.bytes, period = excluded.period, month_start_day = excluded.month_start_day,
        period_start = case when m.period is not distinct from excluded.period
                             and m.month_start_day = excluded.month_start_day then m.period_start else now() end,
        used = case when m.period is not distinct from excluded.period
                     and m.month_start_day = excluded.month_start_day then m.used else 0 end,
        alert_level = case when m.period is distinct from excluded.period
                             or m.month_start_day <> excluded.month_start_day then 0
                           else least(m.alert_level, case when m.used >= excluded.bytes then 100
                                                          when m.used * 5 >= excluded.bytes * 4 then 80
                                                          else 0 end) end,
        updated_at = now(), updated_by = excluded.updated_by
      returning ${sql.unsafe(COLUMNS)}`;
    if (!row) throw new Error('quota upsert returned nothing');
    return toQuota(row);
  });
}

/** Removes the byte quota (an expiry stays); false when there was none. */
export async function clearQuota(sql: Sql, imei: string, updatedBy: string): Promise<boolean> {
  checkImei(imei);
  return sql.begin(async (tx) => {
    const rows = await tx`
      update modem_quotas set bytes = null, period = null, used = 0, alert_level = 0,
        updated_at = now(), updated_by = ${by(updatedBy)}
      where imei = ${imei} and bytes is not null returning imei`;
    await tx`delete from modem_quotas where imei = ${imei} and bytes is null and expires_at is null
             and closed_reason is null`;
    return rows.length > 0;
  });
}

/** Starts the quota's period now (what it used is forgotten: the port reopens); `no_quota`. */
export async function resetQuota(sql: Sql, imei: string, updatedBy: string): Promise<StoredQuota> {
  checkImei(imei);
  const [row] = await sql<QuotaRow[]>`
    update modem_quotas set period_start = now(), used = 0, alert_level = 0,
      updated_at = now(), updated_by = ${by(updatedBy)}
    where imei = ${imei} and bytes is not null returning ${sql.unsafe(COLUMNS)}`;
  if (!row) throw new ModemfleetError('no_quota', `modem ${imei} has no byte quota`);
  return toQuota(row);
}

/** Sets when the modem's port stops serving (a time in the past closes it now). */
export async function setExpiry(sql: Sql, imei: string, at: Date, updatedBy: string): Promise<StoredQuota> {
  checkImei(imei);
  if (!(at instanceof Date) || Number.isNaN(at.getTime()))
    throw new ModemfleetError('invalid_expiry', 'at: must be an ISO 8601 time, e.g. 2030-01-31T00:00:00Z');
  return withModem(imei, async () => {
    const [row] = await sql<QuotaRow[]>`
      insert into modem_quotas as m (imei, expires_at, updated_by)
      values (${imei}, ${at}, ${by(updatedBy)})
      on conflict (imei) do update set expires_at = excluded.expires_at, updated_at = now(),
        updated_by = excluded.updated_by
      returning ${sql.unsafe(COLUMNS)}`;
    if (!row) throw new Error('expiry upsert returned nothing');
    return toQuota(row);
  });
}

/** Removes the expiry; false when there was none. */
export async function clearExpiry(sql: Sql, imei: string, updatedBy: string): Promise<boolean> {
  checkImei(imei);
  return sql.begin(async (tx) => {
    const rows = await tx`
      update modem_quotas set expires_at = null, updated_at = now(), updated_by = ${by(updatedBy)}
      where imei = ${imei} and expires_at is not null returning imei`;
    await tx`delete from modem_quotas where imei = ${imei} and bytes is null and expires_at is null
             and closed_reason is null`;
    return rows.length > 0;
  });
}

/** What the owning host enforces: its modems' quotas, with its traffic cursor of each. */
export interface HostQuota extends StoredQuota {
  /** The last sample stored for this modem from this host (null: none yet). */
  cursor: { instance: string; download: number; upload: number } | null;
  now: Date;
}

export async function hostQuotas(sql: Sql, hostId: string): Promise<HostQuota[]> {
  const rows = await sql<
    (QuotaRow & { instance: string | null; c_down: string | null; c_up: string | null; now: Date })[]
  >`
    select q.imei, q.bytes::text, q.period, q.month_start_day, q.period_start, q.used::text, q.alert_level,
           q.expires_at, q.closed_reason, q.closed_at, q.updated_at, q.updated_by,
           c.instance, c.download::text as c_down, c.upload::text as c_up, now() as now
    from modem_quotas q join modems m on m.imei = q.imei
    left join traffic_cursors c on c.imei = q.imei and c.host_id = ${hostId}
    where m.host_id = ${hostId}`;
  return rows.map((r) => ({
    ...toQuota(r),
    cursor:
      r.instance === null
        ? null
        : { instance: r.instance, download: Number(r.c_down), upload: Number(r.c_up) },
    now: r.now,
  }));
}

/** The owning host closed or reopened the port (null); true when that changed the row. */
export async function markClosed(sql: Sql, imei: string, reason: ClosedReason | null): Promise<boolean> {
  return sql.begin(async (tx) => {
    const rows = await tx`
      update modem_quotas set closed_reason = ${reason},
        closed_at = case when ${reason}::text is null then null else coalesce(closed_at, now()) end
      where imei = ${imei} and closed_reason is distinct from ${reason} returning imei`;
    // a row kept only to say why the port was closed goes once it is open again
    await tx`delete from modem_quotas where imei = ${imei} and bytes is null and expires_at is null
             and closed_reason is null`;
    return rows.length > 0;
  });
}

/**
 * Records that the quota's `level` alert (80, 100) was raised in the period that started at
 * `periodStart`; false when it already was (another host, an earlier run): raise it only on true.
 */
export async function raiseAlertLevel(
  sql: Sql,
  imei: string,
  level: 80 | 100,
  periodStart: Date,
): Promise<boolean> {
  const rows = await sql`
    update modem_quotas set alert_level = ${level}
    where imei = ${imei} and alert_level < ${level} and bytes is not null
      and date_trunc('milliseconds', period_start) <= ${periodStart} returning imei`;
  return rows.length > 0;
}
