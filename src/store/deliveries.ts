import type { Sql } from 'postgres';
import type { AlertEvent, Severity, WebhookFormat } from '../alerts/webhookSpec.js';
import { ModemfleetError } from '../util/errors.js';

/** Deliveries of push alerts (`webhook_deliveries`, sql/0012_webhooks.sql): claimed once, recorded. */

/** One delivery to make: the webhook's address and secret, and what to say. */
export interface DeliveryJob {
  id: number;
  attempts: number;
  url: string;
  secret: string;
  format: WebhookFormat;
  chatId: string | null;
  event: AlertEvent;
}

interface JobRow {
  id: string;
  attempts: number;
  event: AlertEvent['event'];
  name: string;
  url: string;
  secret: string;
  format: WebhookFormat;
  chat_id: string | null;
  alert_id: string | null;
  kind: string | null;
  severity: Severity | null;
  message: string | null;
  imei: string | null;
  host_id: string | null;
  detail: Record<string, unknown> | null;
  raised_at: Date | null;
  resolved_at: Date | null;
}

const TEST_ALERT = {
  kind: 'webhook_test',
  severity: 'info' as const,
  message: 'a test delivery from modemfleet: this webhook works',
};

const toJob = (r: JobRow): DeliveryJob => ({
  id: Number(r.id),
  attempts: r.attempts,
  url: r.url,
  secret: r.secret,
  format: r.format,
  chatId: r.chat_id,
  event: {
    event: r.event,
    deliveryId: Number(r.id),
    webhook: r.name,
    alert: {
      id: r.alert_id === null ? null : Number(r.alert_id),
      kind: r.kind ?? TEST_ALERT.kind,
      severity: r.severity ?? TEST_ALERT.severity,
      message: r.message ?? TEST_ALERT.message,
      imei: r.imei,
      host: r.host_id,
      detail: r.detail ?? {},
      raisedAt: (r.raised_at ?? new Date()).toISOString(),
      resolvedAt: r.resolved_at?.toISOString() ?? null,
    },
  },
});

const jobColumns = (sql: Sql) => sql`
  d.id, d.attempts, d.event, w.name, w.url, w.secret, w.format, w.chat_id, d.alert_id, a.kind,
  a.severity, a.message, a.imei, a.host_id, a.detail, a.raised_at, a.resolved_at`;

/**
 * Claim due deliveries, whichever host raised the alert: `FOR UPDATE SKIP LOCKED`, so each is sent
 * by one host; per webhook one at a time and in id order (a delivery waiting for its retry holds
 * back the later ones of its webhook, so a receiver gets its alerts in order). A delivery left
 * `sending` longer than `staleSeconds` (its host died mid-send) is due again first.
 */
export async function claimDeliveries(
  sql: Sql,
  hostId: string,
  limit: number,
  staleSeconds: number,
): Promise<DeliveryJob[]> {
  await sql`
    update webhook_deliveries set
      status = case when event = 'test' then 'failed' else 'pending' end,
      last_error = case when event = 'test' then 'abandoned' else last_error end, claimed_by = null
    where status = 'sending' and claimed_at < now() - make_interval(secs => ${staleSeconds})`;
  const rows = await sql<JobRow[]>`
    with claimed as (
      update webhook_deliveries c set status = 'sending', claimed_by = ${hostId}, claimed_at = now(),
        attempts = c.attempts + 1
      where c.id in (
        select p.id from webhook_deliveries p
        where p.status = 'pending' and p.next_attempt_at <= now()
          and not exists (select 1 from webhook_deliveries r
            where r.webhook_id = p.webhook_id and r.event <> 'test'
              and (r.status = 'sending' or (r.status = 'pending' and r.id < p.id)))
        order by p.id limit ${limit}
        for update of p skip locked)
      and c.status = 'pending'
      returning c.*)
    select ${jobColumns(sql)} from claimed d join webhooks w on w.id = d.webhook_id
    left join alerts a on a.id = d.alert_id
    order by d.id`;
  return rows.map(toJob);
}

/**
 * What became of an attempt: delivered, or pending again after `retryInMs`, or failed for good
 * (`retryInMs` null). Only a delivery this host holds is written.
 */
export async function finishDelivery(
  sql: Sql,
  hostId: string,
  id: number,
  outcome: { ok: boolean; status: number | null; error: string | null; retryInMs: number | null },
): Promise<boolean> {
  const status = outcome.ok ? 'delivered' : outcome.retryInMs === null ? 'failed' : 'pending';
  const rows = await sql`
    update webhook_deliveries set status = ${status}, last_status = ${outcome.status},
      last_error = ${outcome.error?.slice(0, 500) ?? null},
      next_attempt_at = now() + make_interval(secs => ${(outcome.retryInMs ?? 0) / 1000}),
      finished_at = ${status === 'pending' ? null : sql`now()`}
    where id = ${id} and status = 'sending' and claimed_by = ${hostId}
    returning id`;
  return rows.length === 1;
}

/**
 * Milliseconds until the first pending delivery waiting for its retry time is due (undefined: none).
 * Deliveries due now but held back behind one being sent are not counted: that send's end wakes
 * the worker that made it.
 */
export async function nextDeliveryDueMs(sql: Sql): Promise<number | undefined> {
  const [row] = await sql<{ ms: number | null }[]>`
    select ceil(extract(epoch from min(next_attempt_at) - now()) * 1000)::float8 as ms
    from webhook_deliveries where status = 'pending' and next_attempt_at > now()`;
  return row?.ms === null || row?.ms === undefined ? undefined : Math.max(0, row.ms);
}

/** A test delivery, claimed by this host at once (sent by the API request, never retried). */
export async function insertTestDelivery(sql: Sql, hostId: string, webhookId: number): Promise<DeliveryJob> {
  const rows = await sql<JobRow[]>`
    with d as (
      insert into webhook_deliveries (webhook_id, event, status, attempts, claimed_by, claimed_at)
      select id, 'test', 'sending', 1, ${hostId}, now() from webhooks where id = ${webhookId}
      returning *)
    select ${jobColumns(sql)} from d join webhooks w on w.id = d.webhook_id
    left join alerts a on a.id = d.alert_id`;
  const [row] = rows;
  if (!row) throw new ModemfleetError('unknown_webhook', `no webhook with id ${webhookId}`);
  return toJob(row);
}

export interface StoredDelivery {
  id: number;
  alertId: number | null;
  event: string;
  status: string;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  nextAttemptAt: Date | null;
  createdAt: Date;
  finishedAt: Date | null;
  claimedBy: string | null;
}

/** A webhook's deliveries, newest first. */
export async function listDeliveries(sql: Sql, webhookId: number, limit: number): Promise<StoredDelivery[]> {
  const rows = await sql<
    {
      id: string;
      alert_id: string | null;
      event: string;
      status: string;
      attempts: number;
      last_status: number | null;
      last_error: string | null;
      next_attempt_at: Date;
      created_at: Date;
      finished_at: Date | null;
      claimed_by: string | null;
    }[]
  >`select id, alert_id, event, status, attempts, last_status, last_error, next_attempt_at, created_at,
      finished_at, claimed_by
    from webhook_deliveries where webhook_id = ${webhookId} order by id desc limit ${limit}`;
  return rows.map((r) => ({
    id: Number(r.id),
    alertId: r.alert_id === null ? null : Number(r.alert_id),
    event: r.event,
    status: r.status,
    attempts: r.attempts,
    lastStatus: r.last_status,
    lastError: r.last_error,
    nextAttemptAt: r.status === 'pending' ? r.next_attempt_at : null,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
    claimedBy: r.claimed_by,
  }));
}
