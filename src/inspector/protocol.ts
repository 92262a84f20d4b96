import type { ModemView } from '../store/modems.js';
import type { StoredAlert, StoredHealth } from '../store/history.js';
import type { Notification } from '../store/listener.js';
import { IMEI_PATTERN } from '../store/types.js';

/**
 * The WebSocket protocol of `/ws`. Server → client: a `snapshot` first (and after every `resync`;
 * with `/ws?first=N` a `snapshot` of the first N rows and right after it a `snapshot_rest` of the
 * others), then typed updates. Every transition carries the modem's seq: a client that sees seq jump past
 * the one it expects has missed something and sends `{"type":"resync"}`.
 */
export type ServerMessage =
  | {
      type: 'snapshot';
      at: string;
      modems: ModemView[];
      alerts: StoredAlert[];
      /** With `/ws?first=N`: how many rows follow in the `snapshot_rest` that comes next. */
      rest?: number;
    }
  /** With `/ws?first=N`: the snapshot's other rows, always right after its `snapshot`. */
  | { type: 'snapshot_rest'; modems: ModemView[] }
  | {
      type: 'transition';
      imei: string;
      seq: number;
      from: string | null;
      to: string;
      event: string;
      at: string;
      host: string | null;
    }
  | { type: 'modem'; modem: ModemView }
  | ({ type: 'health'; imei: string; at: string } & Omit<StoredHealth, 'at'>)
  | {
      type: 'alert';
      id: number;
      imei: string | null;
      host: string | null;
      kind: string;
      severity: string;
      resolved: boolean;
    }
  | { type: 'command'; id: number; imei: string; kind: string; status: string }
  | { type: 'host'; event: string; host: string; at: string }
  | { type: 'resync'; reason: 'slow_client' | 'listen_reconnected' | 'requested' | 'overflow' }
  | { type: 'pong' }
  | { type: 'error'; error: string; message: string };

export type ClientMessage = { type: 'resync' } | { type: 'ping' };

/** A client's message, or the reason it is refused. */
export function parseClientMessage(raw: string): ClientMessage | { problem: string } {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return { problem: 'not JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { problem: 'a message is a JSON object with a "type"' };
  const type = (value as { type?: unknown }).type;
  if (type === 'resync' || type === 'ping') return { type };
  return { problem: `unknown message type (expected "resync" or "ping")` };
}

const str = (v: unknown, max: number): string | undefined =>
  typeof v === 'string' && v.length <= max ? v : undefined;
const strOrNull = (v: unknown, max: number): string | null | undefined =>
  v === null || v === undefined ? null : str(v, max);
const int = (v: unknown): number | undefined =>
  typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
const numOrNull = (v: unknown): number | null | undefined =>
  v === null || v === undefined ? null : typeof v === 'number' && Number.isFinite(v) ? v : undefined;
const imeiOf = (v: unknown): string | undefined =>
  typeof v === 'string' && IMEI_PATTERN.test(v) ? v : undefined;

type TransitionMessage = Extract<ServerMessage, { type: 'transition' }>;

/** Transitions in one notification; far more than PostgreSQL's 8000 bytes could carry is refused. */
const MAX_TRANSITIONS = 500;

function transitionOf(p: Record<string, unknown>): TransitionMessage | null {
  const imei = imeiOf(p['imei']);
  const seq = int(p['seq']);
  const from = strOrNull(p['from'], 128);
  const to = str(p['to'], 128);
  const event = str(p['event'], 64);
  const at = str(p['at'], 64);
  const host = strOrNull(p['host'], 64);
  if (!imei || !seq || from === undefined || !to || !event || !at || host === undefined) return null;
  return { type: 'transition', imei, seq, from, to, event, at, host };
}

/**
 * The transitions of one `modem_status_change` notification, in order: the trigger sends one per
 * batch of stored rows, `{"transitions":[{imei, seq, from, to, event, at, host}, ...]}`. Null when
 * the payload or any element has another shape (the whole notification is dropped).
 */
export function transitionsOf(payload: Record<string, unknown>): TransitionMessage[] | null {
  const list = payload['transitions'];
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_TRANSITIONS) return null;
  const out: TransitionMessage[] = [];
  for (const item of list as unknown[]) {
    if (typeof item !== 'object' || item === null || Array.isArray(item)) return null;
    const t = transitionOf(item as Record<string, unknown>);
    if (t === null) return null;
    out.push(t);
  }
  return out;
}

/**
 * A notification as client messages, in order: one per transition of a journal batch, one for any
 * other channel, none for `modem_config_change` (it only marks the modem for a row refresh). Null
 * for payloads our triggers did not write (anyone with database access can NOTIFY anything): they
 * are counted and dropped, never forwarded.
 */
export function messagesOf(n: Notification): ServerMessage[] | null {
  if (n.channel === 'modem_status_change') return transitionsOf(n.payload);
  if (n.channel === 'modem_config_change' || n.channel === 'api_tokens') return [];
  const message = messageOf(n);
  return message === null ? null : [message];
}

/** The one client message of a notification on a channel other than `modem_status_change`. */
export function messageOf(n: Notification): ServerMessage | null {
  const p = n.payload;
  switch (n.channel) {
    case 'modem_status_change':
      return null; // a batch: see messagesOf
    case 'modem_health': {
      const imei = imeiOf(p['imei']);
      const at = str(p['at'], 64);
      const rssi = numOrNull(p['rssi']);
      const rsrp = numOrNull(p['rsrp']);
      const rsrq = numOrNull(p['rsrq']);
      const sinr = numOrNull(p['sinr']);
      const operator = strOrNull(p['operator'], 64);
      const technology = strOrNull(p['technology'], 16);
      if (!imei || !at || rssi === undefined || rsrp === undefined || rsrq === undefined) return null;
      if (sinr === undefined || operator === undefined || technology === undefined) return null;
      return { type: 'health', imei, at, rssi, rsrp, rsrq, sinr, operator, technology };
    }
    case 'modem_alerts': {
      const id = int(p['id']);
      const imei = p['imei'] === null ? null : imeiOf(p['imei']);
      const host = strOrNull(p['host'], 64);
      const kind = str(p['kind'], 64);
      const severity = str(p['severity'], 16);
      if (!id || imei === undefined || host === undefined || !kind || !severity) return null;
      return { type: 'alert', id, imei, host, kind, severity, resolved: p['resolved'] === true };
    }
    case 'modem_commands': {
      const id = int(p['id']);
      const imei = imeiOf(p['imei']);
      const kind = str(p['kind'], 16);
      const status = str(p['status'], 16);
      if (!id || !imei || !kind || !status) return null;
      return { type: 'command', id, imei, kind, status };
    }
    case 'system_events': {
      const event = str(p['type'], 32);
      const host = str(p['host'], 64);
      const at = str(p['at'], 64);
      if (!event || !host || !at) return null;
      return { type: 'host', event, host, at };
    }
    case 'modem_config_change':
      return null; // only marks the modem for a row refresh
    case 'api_tokens':
      return null; // the hub disconnects a revoked token's clients; nothing is forwarded
  }
}

/** The id of the API token a `api_tokens` notification revoked, if that is what it says. */
export function revokedTokenId(n: Notification): number | undefined {
  if (n.channel !== 'api_tokens' || n.payload['event'] !== 'revoked') return undefined;
  return int(n.payload['id']) || undefined;
}

/** The IMEI whose row a health or config notification changed (to refresh it), if any. */
export function touchedImei(n: Notification): string | undefined {
  if (n.channel === 'modem_health' || n.channel === 'modem_config_change') return imeiOf(n.payload['imei']);
  return undefined;
}
