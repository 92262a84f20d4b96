import type { Sql } from 'postgres';
import { redactUrl, type Severity, type WebhookFormat, type WebhookSpec } from '../alerts/webhookSpec.js';
import { ModemfleetError } from '../util/errors.js';
import { pgTextArray } from './journal.js';
import { errorCode, SQLSTATE } from './pgErrors.js';

/** Webhooks and their deliveries (`webhooks`, `webhook_deliveries`, sql/0012_webhooks.sql). */

/** A webhook as the API shows it: never its secret, a Telegram URL without its bot token. */
export interface StoredWebhook {
  id: number;
  name: string;
  url: string;
  format: WebhookFormat;
  chatId: string | null;
  filter: { kinds: string[] | null; severities: Severity[] | null; resolved: boolean };
  source: 'api' | 'config';
  createdBy: string;
  createdAt: Date;
  /** Deliveries waiting (pending or being sent), and the last one finished. */
  waiting: number;
  lastDelivery: { status: string; at: Date | null; error: string | null } | null;
}

interface WebhookRow {
  id: string;
  name: string;
  url: string;
  format: WebhookFormat;
  chat_id: string | null;
  kinds: string[] | null;
  severities: Severity[] | null;
  include_resolved: boolean;
  source: 'api' | 'config';
  created_by: string;
  created_at: Date;
  waiting?: number;
  last_status?: string | null;
  last_at?: Date | null;
  last_error?: string | null;
}

const toWebhook = (r: WebhookRow): StoredWebhook => ({
  id: Number(r.id),
  name: r.name,
  url: redactUrl(r.url),
  format: r.format,
  chatId: r.chat_id,
  filter: { kinds: r.kinds, severities: r.severities, resolved: r.include_resolved },
  source: r.source,
  createdBy: r.created_by,
  createdAt: r.created_at,
  waiting: r.waiting ?? 0,
  lastDelivery: r.last_status
    ? { status: r.last_status, at: r.last_at ?? null, error: r.last_error ?? null }
    : null,
});

/** A text[] parameter as its literal (the pool fetches no array types), or null. */
const textArray = (values: readonly string[] | null) => (values ? pgTextArray(values) : null);

const columns = (sql: Sql) => sql`
  w.id, w.name, w.url, w.format, w.chat_id, to_jsonb(w.kinds) as kinds, to_jsonb(w.severities) as severities, w.include_resolved, w.source,
  w.created_by, w.created_at`;

/** A new webhook (`webhook_exists` when the name is taken; nothing stored then). */
export async function createWebhook(sql: Sql, spec: WebhookSpec, createdBy: string): Promise<StoredWebhook> {
  try {
    const [row] = await sql<WebhookRow[]>`
      insert into webhooks as w (name, url, secret, format, chat_id, kinds, severities, include_resolved, created_by)
      values (${spec.name}, ${spec.url}, ${spec.secret}, ${spec.format}, ${spec.chatId}, ${textArray(spec.kinds)}::text[],
              ${textArray(spec.severities)}::text[], ${spec.resolved}, ${createdBy.slice(0, 128) || 'unknown'})
      returning ${columns(sql)}`;
    if (!row) throw new Error('insert returned nothing');
    return toWebhook(row);
  } catch (err) {
    if (errorCode(err) === SQLSTATE.uniqueViolation)
      throw new ModemfleetError('webhook_exists', `a webhook named '${spec.name}' exists`, { cause: err });
    throw err;
  }
}

export async function listWebhooks(sql: Sql, id?: number): Promise<StoredWebhook[]> {
  const rows = await sql<WebhookRow[]>`
    select ${columns(sql)},
      (select count(*)::int from webhook_deliveries d
        where d.webhook_id = w.id and d.status in ('pending', 'sending')) as waiting,
      l.status as last_status, l.finished_at as last_at, l.last_error
    from webhooks w
    left join lateral (select status, finished_at, last_error from webhook_deliveries d
      where d.webhook_id = w.id and d.finished_at is not null order by d.finished_at desc limit 1) l on true
    where ${id === undefined ? sql`true` : sql`w.id = ${id}`}
    order by w.id`;
  return rows.map(toWebhook);
}

/** Remove a webhook made through the API (with its deliveries); one from the config stays there. */
export async function deleteWebhook(sql: Sql, id: number): Promise<void> {
  const [row] = await sql<{ source: string }[]>`select source from webhooks where id = ${id}`;
  if (!row) throw new ModemfleetError('unknown_webhook', `no webhook with id ${id}`);
  if (row.source === 'config')
    throw new ModemfleetError(
      'config_webhook',
      `webhook ${id} is defined in the config file: remove it there`,
    );
  await sql`delete from webhooks where id = ${id} and source = 'api'`;
}

/**
 * The config's webhooks, in the table by name (created or updated; a same-named API webhook is taken
 * over); config webhooks no longer in the config are removed. In one transaction.
 */
export async function syncConfigWebhooks(sql: Sql, specs: readonly WebhookSpec[]): Promise<void> {
  await sql.begin(async (tx) => {
    for (const s of specs) {
      await tx`
        insert into webhooks (name, url, secret, format, chat_id, kinds, severities, include_resolved, source, created_by)
        values (${s.name}, ${s.url}, ${s.secret}, ${s.format}, ${s.chatId}, ${textArray(s.kinds)}::text[], ${textArray(s.severities)}::text[],
                ${s.resolved}, 'config', 'config')
        on conflict (name) do update set url = excluded.url, secret = excluded.secret, format = excluded.format,
          chat_id = excluded.chat_id, kinds = excluded.kinds, severities = excluded.severities,
          include_resolved = excluded.include_resolved, source = 'config', updated_at = now()`;
    }
    const names = specs.map((s) => s.name);
    await tx`delete from webhooks where source = 'config' and not (name = any (${textArray(names)}::text[]))`;
  });
}
