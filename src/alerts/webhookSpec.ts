import { createHmac, randomBytes } from 'node:crypto';

/**
 * Webhook definitions (config `webhooks`, API `POST /api/webhooks`): validation with `path: message`
 * problems, the text and JSON bodies sent, and the signature. Pure: no I/O.
 */
export const WEBHOOK_FORMATS = ['json', 'telegram', 'chat'] as const;
export type WebhookFormat = (typeof WEBHOOK_FORMATS)[number];
export const SEVERITIES = ['info', 'warning', 'critical'] as const;
export type Severity = (typeof SEVERITIES)[number];

export interface WebhookSpec {
  name: string;
  url: string;
  /** HMAC-SHA256 key of `X-Modemfleet-Signature`; generated when not given. */
  secret: string;
  format: WebhookFormat;
  /** Telegram only: the chat the bot posts to. */
  chatId: string | null;
  /** Event filter: null matches every kind / severity. */
  kinds: string[] | null;
  severities: Severity[] | null;
  /** Also deliver an alert's resolution. */
  resolved: boolean;
}

export const SIGNATURE_HEADER = 'x-modemfleet-signature';
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const KIND = /^[a-z][a-z0-9_]{0,63}$/;
const CHAT_ID = /^-?[0-9]{1,20}$|^@[A-Za-z0-9_]{4,64}$/;
const KEYS = ['name', 'url', 'secret', 'format', 'chatId', 'botToken', 'filter'];
const FILTER_KEYS = ['kinds', 'severities', 'resolved'];

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** An http(s) URL without credentials, at most 2048 characters; else why not. */
export function urlProblem(value: unknown): string | undefined {
  if (typeof value !== 'string' || value.length > 2048)
    return 'must be an http(s) URL of at most 2048 characters';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an http(s) URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an http(s) URL';
  if (url.username || url.password) return 'must not carry a user or password (use the secret)';
  return undefined;
}

/**
 * A webhook from untrusted input. `prefix` names the place (`webhooks[0]` in the config; empty for
 * the API). A telegram hook takes `botToken` (the URL is built) or a full `url`, and needs `chatId`.
 */
export function parseWebhook(
  input: unknown,
  prefix: string,
  problems: string[],
  randomSecret: () => string = () => randomBytes(24).toString('base64url'),
): WebhookSpec | undefined {
  const at = (key: string): string => (prefix ? `${prefix}.${key}` : key);
  const before = problems.length;
  if (!isRecord(input)) {
    problems.push(`${prefix || 'webhook'}: must be an object`);
    return undefined;
  }
  for (const key of Object.keys(input))
    if (!KEYS.includes(key)) problems.push(`${at(key.slice(0, 32))}: unknown setting`);
  const { name, secret, chatId, botToken, filter } = input;
  if (typeof name !== 'string' || !NAME.test(name))
    problems.push(`${at('name')}: letters, digits, dots, dashes and underscores, 1-64`);
  const format = input['format'] ?? 'json';
  if (!(WEBHOOK_FORMATS as readonly unknown[]).includes(format))
    problems.push(`${at('format')}: must be one of ${WEBHOOK_FORMATS.join(', ')}`);
  let url = input['url'];
  if (botToken !== undefined) {
    if (format !== 'telegram') problems.push(`${at('botToken')}: only for format "telegram"`);
    else if (typeof botToken !== 'string' || !/^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$/.test(botToken))
      problems.push(`${at('botToken')}: a Telegram bot token (digits:letters)`);
    else if (url !== undefined) problems.push(`${at('url')}: give url or botToken, not both`);
    else url = `https://api.telegram.org/bot${botToken}/sendMessage`;
  }
  const bad = urlProblem(url);
  if (bad) problems.push(`${at('url')}: ${bad}`);
  if (secret !== undefined && (typeof secret !== 'string' || secret.length < 16 || secret.length > 256))
    problems.push(`${at('secret')}: 16-256 characters`);
  if (format === 'telegram') {
    if (typeof chatId !== 'string' || !CHAT_ID.test(chatId))
      problems.push(`${at('chatId')}: format "telegram" needs the chat id (digits, or @channel)`);
  } else if (chatId !== undefined) problems.push(`${at('chatId')}: only for format "telegram"`);
  let kinds: string[] | null = null;
  let severities: Severity[] | null = null;
  let resolved = false;
  if (filter !== undefined) {
    if (!isRecord(filter)) problems.push(`${at('filter')}: must be { "kinds", "severities", "resolved" }`);
    else {
      for (const key of Object.keys(filter))
        if (!FILTER_KEYS.includes(key)) problems.push(`${at('filter')}.${key.slice(0, 32)}: unknown setting`);
      const k = filter['kinds'];
      if (k !== undefined) {
        if (
          !Array.isArray(k) ||
          k.length < 1 ||
          k.length > 64 ||
          !k.every((x) => typeof x === 'string' && KIND.test(x))
        )
          problems.push(`${at('filter.kinds')}: 1-64 alert kinds (e.g. "egress_mismatch")`);
        else kinds = [...new Set(k as string[])];
      }
      const s = filter['severities'];
      if (s !== undefined) {
        if (
          !Array.isArray(s) ||
          s.length < 1 ||
          !s.every((x) => (SEVERITIES as readonly unknown[]).includes(x))
        )
          problems.push(`${at('filter.severities')}: some of ${SEVERITIES.join(', ')}`);
        else severities = [...new Set(s as Severity[])];
      }
      const r = filter['resolved'];
      if (r !== undefined && typeof r !== 'boolean') problems.push(`${at('filter.resolved')}: true or false`);
      else resolved = r === true;
    }
  }
  if (problems.length > before) return undefined;
  return {
    name: name as string,
    url: url as string,
    secret: typeof secret === 'string' ? secret : randomSecret(),
    format: format as WebhookFormat,
    chatId: typeof chatId === 'string' ? chatId : null,
    kinds,
    severities,
    resolved,
  };
}

/** A Telegram URL shown without its bot token (the token is a secret too). */
export const redactUrl = (url: string): string => url.replace(/\/bot[^/]+\//, '/bot***/');

/** What is delivered about one alert. */
export interface AlertEvent {
  event: 'raised' | 'resolved' | 'test';
  deliveryId: number;
  webhook: string;
  alert: {
    id: number | null;
    kind: string;
    severity: Severity;
    message: string;
    imei: string | null;
    host: string | null;
    detail: Record<string, unknown>;
    raisedAt: string;
    resolvedAt: string | null;
  };
}

/** One line an operator reads in a chat: severity, kind, modem, host, message. */
export function alertText(e: AlertEvent): string {
  const a = e.alert;
  const tag = e.event === 'resolved' ? 'RESOLVED' : e.event === 'test' ? 'TEST' : a.severity.toUpperCase();
  const where = [a.imei ? `modem ${a.imei}` : null, a.host ? `host ${a.host}` : null].filter(Boolean);
  return `[${tag}] ${a.kind}${where.length ? ` (${where.join(', ')})` : ''}: ${a.message}`;
}

/** The body of a delivery in the webhook's format, as the exact bytes signed and sent. */
export function renderBody(
  format: WebhookFormat,
  chatId: string | null,
  e: AlertEvent,
  sentAt: Date,
): string {
  switch (format) {
    case 'json':
      return JSON.stringify({ ...e, sentAt: sentAt.toISOString() });
    case 'telegram':
      return JSON.stringify({ chat_id: chatId, text: alertText(e), disable_web_page_preview: true });
    case 'chat':
      return JSON.stringify({ text: alertText(e) });
  }
}

/** `sha256=<hex HMAC-SHA256 of the raw body with the webhook's secret>`. */
export const signature = (secret: string, body: string): string =>
  `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
