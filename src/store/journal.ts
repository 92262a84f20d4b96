import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { json } from './sqlJson.js';
import { IMEI_PATTERN, MODEM_STATES, type AppendResult, type TransitionRecord } from './types.js';

const MAX_DETAIL_BYTES = 4000;

export class JournalError extends ModemfleetError {
  constructor(message: string) {
    super('journal_invalid', message);
    this.name = 'JournalError';
  }
}

/** Throws a JournalError naming the row when a transition cannot be stored. */
export function checkTransition(row: TransitionRecord): void {
  const where = `transition ${row.imei}#${row.seq}`;
  if (!IMEI_PATTERN.test(row.imei)) throw new JournalError(`${where}: imei must be 15 digits`);
  if (!Number.isSafeInteger(row.seq) || row.seq < 1)
    throw new JournalError(`${where}: seq must be an integer >= 1`);
  const top = row.to.split('.')[0];
  if (!(MODEM_STATES as readonly string[]).includes(top ?? ''))
    throw new JournalError(`${where}: unknown state '${row.to}'`);
  if (row.to.length > 128 || (row.from?.length ?? 0) > 128)
    throw new JournalError(`${where}: state path too long`);
  if (!row.event || row.event.length > 64) throw new JournalError(`${where}: event must be 1-64 characters`);
  if (!(row.at instanceof Date) || Number.isNaN(row.at.getTime()))
    throw new JournalError(`${where}: invalid time`);
  if (row.detail && Buffer.byteLength(JSON.stringify(row.detail)) > MAX_DETAIL_BYTES) {
    throw new JournalError(`${where}: detail larger than ${MAX_DETAIL_BYTES} bytes`);
  }
  if (row.reason !== undefined && !/^[a-z][a-z0-9_]{0,63}$/.test(row.reason))
    throw new JournalError(`${where}: invalid reason`);
}

/**
 * Append a batch of transitions (any number of modems) in one round trip. Idempotent on
 * (imei, seq): rows already stored are skipped. New rows are stored as far as they continue the
 * modem's sequence; rows after a missing seq are not, and `gapAt` names the seq the modem waits for.
 */
export async function appendTransitions(
  sql: Sql,
  batch: readonly TransitionRecord[],
): Promise<AppendResult[]> {
  if (batch.length === 0) return [];
  batch.forEach(checkTransition);
  const payload = json(
    sql,
    batch.map((r) => ({
      imei: r.imei,
      seq: r.seq,
      from_state: r.from,
      to_state: r.to,
      event: r.event,
      detail: r.detail ?? {},
      at: r.at.toISOString(),
      host_id: r.host ?? null,
      reason: r.reason ?? null,
      wan_ip: r.wanIp ?? null,
    })),
  );
  const rows = await sql<{ imei: string; stored: number; last_seq: number; gap_at: number | null }[]>`
    select imei, stored, last_seq, gap_at from append_transitions(${payload}::jsonb)`;
  return rows.map((r) => ({ imei: r.imei, stored: r.stored, lastSeq: r.last_seq, gapAt: r.gap_at }));
}

export interface StoredTransition {
  imei: string;
  seq: number;
  from: string | null;
  to: string;
  event: string;
  detail: Record<string, unknown>;
  at: Date;
  host: string | null;
}

/** A modem's journal, newest first, paged by seq. */
export async function readTransitions(
  sql: Sql,
  imei: string,
  options: { before?: number; limit?: number } = {},
): Promise<StoredTransition[]> {
  const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
  const before = options.before ?? Number.MAX_SAFE_INTEGER;
  const rows = await sql<
    {
      imei: string;
      seq: number;
      from_state: string | null;
      to_state: string;
      event: string;
      detail: Record<string, unknown>;
      at: Date;
      host_id: string | null;
    }[]
  >`select imei, seq, from_state, to_state, event, detail, at, host_id from modem_transitions
    where imei = ${imei} and seq < ${before} order by seq desc limit ${limit}`;
  return rows.map((r) => ({
    imei: r.imei,
    seq: r.seq,
    from: r.from_state,
    to: r.to_state,
    event: r.event,
    detail: r.detail,
    at: r.at,
    host: r.host_id,
  }));
}
