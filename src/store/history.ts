import type { Sql } from 'postgres';
import type { AlertSeverity, CommandKind, CommandStatus } from './types.js';

/** Reads of what the farm recorded: health series, alerts, commands, the last error of a modem. */

export interface StoredHealth {
  at: Date;
  rssi: number | null;
  rsrp: number | null;
  rsrq: number | null;
  sinr: number | null;
  operator: string | null;
  technology: string | null;
}

/** Health samples of one modem since a time, oldest first (at most `limit`, the newest ones). */
export async function readHealth(
  sql: Sql,
  imei: string,
  options: { since?: Date; limit?: number } = {},
): Promise<StoredHealth[]> {
  const limit = Math.min(Math.max(options.limit ?? 500, 1), 5000);
  const since = options.since ?? new Date(Date.now() - 3_600_000);
  const rows = await sql<StoredHealth[]>`
    select at, rssi, rsrp, rsrq, sinr, operator, technology from (
      select * from modem_health where imei = ${imei} and at >= ${since} order by at desc limit ${limit}
    ) h order by at`;
  return rows.map((r) => ({ ...r }));
}

export interface StoredAlert {
  id: number;
  host: string | null;
  imei: string | null;
  kind: string;
  severity: AlertSeverity;
  message: string;
  detail: Record<string, unknown>;
  raisedAt: Date;
  resolvedAt: Date | null;
  /** Raised while its modem was silenced: recorded, never delivered. */
  silenced: boolean;
  ackedAt: Date | null;
  ackedBy: string | null;
}

/** Alerts, newest first: open ones only by default; `before` pages by id. */
export async function listAlerts(
  sql: Sql,
  options: { open?: boolean; imei?: string; before?: number; limit?: number } = {},
): Promise<StoredAlert[]> {
  const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
  const rows = await sql<
    {
      id: number;
      host_id: string | null;
      imei: string | null;
      kind: string;
      severity: AlertSeverity;
      message: string;
      detail: Record<string, unknown>;
      raised_at: Date;
      resolved_at: Date | null;
      silenced: boolean;
      acked_at: Date | null;
      acked_by: string | null;
    }[]
  >`select id, host_id, imei, kind, severity, message, detail, raised_at, resolved_at,
           silenced, acked_at, acked_by from alerts
    where ${options.open === false ? sql`true` : sql`resolved_at is null`}
      and ${options.imei === undefined ? sql`true` : sql`imei = ${options.imei}`}
      and ${options.before === undefined ? sql`true` : sql`id < ${options.before}`}
    order by id desc limit ${limit}`;
  return rows.map((r) => ({
    id: r.id,
    host: r.host_id,
    imei: r.imei,
    kind: r.kind,
    severity: r.severity,
    message: r.message,
    detail: r.detail,
    raisedAt: r.raised_at,
    resolvedAt: r.resolved_at,
    silenced: r.silenced,
    ackedAt: r.acked_at,
    ackedBy: r.acked_by,
  }));
}

export interface StoredCommand {
  id: number;
  imei: string;
  kind: CommandKind;
  status: CommandStatus;
  requestedBy: string;
  requestedAt: Date;
  finishedAt: Date | null;
  result: Record<string, unknown> | null;
}

/** The latest commands of one modem, newest first. */
export async function recentCommands(sql: Sql, imei: string, limit = 20): Promise<StoredCommand[]> {
  const rows = await sql<
    {
      id: number;
      imei: string;
      kind: CommandKind;
      status: CommandStatus;
      requested_by: string;
      requested_at: Date;
      finished_at: Date | null;
      result: Record<string, unknown> | null;
    }[]
  >`select id, imei, kind, status, requested_by, requested_at, finished_at, result from modem_commands
    where imei = ${imei} order by id desc limit ${Math.min(Math.max(limit, 1), 200)}`;
  return rows.map((r) => ({
    id: r.id,
    imei: r.imei,
    kind: r.kind,
    status: r.status,
    requestedBy: r.requested_by,
    requestedAt: r.requested_at,
    finishedAt: r.finished_at,
    result: r.result,
  }));
}

/** The last time the modem entered `error`, with its reason (null when it never did). */
export async function lastError(
  sql: Sql,
  imei: string,
): Promise<{ seq: number; at: Date; reason: string | null; message: string | null } | null> {
  const [row] = await sql<{ seq: number; at: Date; reason: string | null; message: string | null }[]>`
    select seq, at, detail->>'reason' as reason, detail->>'lastError' as message from modem_transitions
    where imei = ${imei} and (to_state = 'error' or to_state like 'error.%')
    order by seq desc limit 1`;
  return row ? { ...row } : null;
}
