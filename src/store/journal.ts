import { isIP } from 'node:net';
import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import {
  HOST_ID_PATTERN,
  IMEI_PATTERN,
  MODEM_STATES,
  type AppendResult,
  type TransitionRecord,
} from './types.js';

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
  // a bad value in these would make PostgreSQL refuse the whole batch, not just this row
  if (row.wanIp !== undefined && isIP(row.wanIp) === 0) throw new JournalError(`${where}: invalid wanIp`);
  if (row.host !== undefined && !HOST_ID_PATTERN.test(row.host))
    throw new JournalError(`${where}: invalid host`);
}

/**
 * A PostgreSQL array literal (`{"a",NULL,"b"}`) of text values, sent as one text parameter and cast
 * in SQL: parsing it costs the server a fraction of the same values in a jsonb document.
 */
export function pgTextArray(values: readonly (string | number | null)[]): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    if (v === null || v === undefined) out += 'NULL';
    else if (typeof v === 'number') out += String(v);
    else out += `"${v.replace(/[\\"]/g, '\\$&')}"`;
  }
  return `${out}}`;
}

const detailText = (r: TransitionRecord): string | null =>
  r.detail && Object.keys(r.detail).length > 0 ? JSON.stringify(r.detail) : null;

/**
 * Append a batch of transitions (any number of modems) in one round trip. Idempotent on
 * (imei, seq): rows at or below the modem's stored seq are skipped (also when retention has pruned
 * them). New rows are stored as far as they continue the modem's sequence; rows after a missing seq
 * are not, and `gapAt` names the seq the modem waits for.
 */
export async function appendTransitions(
  sql: Sql,
  batch: readonly TransitionRecord[],
): Promise<AppendResult[]> {
  if (batch.length === 0) return [];
  batch.forEach(checkTransition);
  const column = (f: (r: TransitionRecord) => string | number | null): string => pgTextArray(batch.map(f));
  const rows = await sql<{ imei: string; stored: number; last_seq: number; gap_at: number | null }[]>`
    select imei, stored, last_seq, gap_at from append_transition_arrays(
      ${column((r) => r.imei)}::text[], ${column((r) => r.seq)}::bigint[],
      ${column((r) => r.from)}::text[], ${column((r) => r.to)}::text[],
      ${column((r) => r.event)}::text[], ${column(detailText)}::jsonb[],
      ${column((r) => r.at.toISOString())}::timestamptz[], ${column((r) => r.host ?? null)}::text[],
      ${column((r) => r.reason ?? null)}::text[], ${column((r) => r.wanIp ?? null)}::inet[])`;
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

/**
 * Retention: deletes up to about `maxRows` of the journal rows older than `olderThanSeconds` (one
 * short transaction) and returns how many it deleted; 0 once nothing is left to prune. What is
 * kept of each modem's journal is a suffix (contiguous seqs); modems.seq is not touched.
 */
export async function pruneTransitions(sql: Sql, olderThanSeconds: number, maxRows: number): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select prune_modem_transitions(make_interval(secs => ${olderThanSeconds}), ${maxRows}::integer)::int as n`;
  return row?.n ?? 0;
}
