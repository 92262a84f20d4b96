import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { errorCode, SQLSTATE } from './pgErrors.js';
import { IMEI_PATTERN } from './types.js';

/** Acknowledging alerts and silencing modems (sql/0012_webhooks.sql). */

export interface Silence {
  imei: string;
  until: Date;
  setBy: string;
  setAt: Date;
}

/** The longest silence: a maintenance window, not a way to turn a modem's alerts off for good. */
export const MAX_SILENCE_DAYS = 30;

/**
 * Silence a modem's alerts until `until` (in the future, at most 30 days ahead; `invalid_silence`
 * otherwise, `unknown_modem` for an unknown IMEI; nothing stored then). Its alerts are still
 * recorded (marked `silenced`) but get no delivery.
 */
export async function setSilence(sql: Sql, imei: string, until: Date, setBy: string): Promise<Silence> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  const ms = until.getTime();
  if (!Number.isFinite(ms) || ms <= Date.now())
    throw new ModemfleetError('invalid_silence', 'until must be a time in the future');
  if (ms > Date.now() + MAX_SILENCE_DAYS * 86_400_000)
    throw new ModemfleetError('invalid_silence', `until must be within ${MAX_SILENCE_DAYS} days`);
  try {
    const [row] = await sql<{ imei: string; until: Date; set_by: string; set_at: Date }[]>`
      insert into modem_silences (imei, until, set_by) values (${imei}, ${until}, ${setBy.slice(0, 128) || 'unknown'})
      on conflict (imei) do update set until = excluded.until, set_by = excluded.set_by, set_at = now()
      returning imei, until, set_by, set_at`;
    if (!row) throw new Error('upsert returned nothing');
    return { imei: row.imei, until: row.until, setBy: row.set_by, setAt: row.set_at };
  } catch (err) {
    if (errorCode(err) === SQLSTATE.foreignKeyViolation)
      throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`, { cause: err });
    throw err;
  }
}

/** End a modem's silence; false when it had none in force. */
export async function clearSilence(sql: Sql, imei: string): Promise<boolean> {
  const rows = await sql`delete from modem_silences where imei = ${imei} returning until > now() as active`;
  return rows.some((r) => r['active'] === true);
}

/** The silences in force (expired ones are kept until replaced or ended, and not listed). */
export async function listSilences(sql: Sql): Promise<Silence[]> {
  const rows = await sql<{ imei: string; until: Date; set_by: string; set_at: Date }[]>`
    select imei, until, set_by, set_at from modem_silences where until > now() order by imei`;
  return rows.map((r) => ({ imei: r.imei, until: r.until, setBy: r.set_by, setAt: r.set_at }));
}

/** Acknowledge an alert (the first acknowledgement is kept); `unknown_alert` when there is none. */
export async function ackAlert(
  sql: Sql,
  id: number,
  by: string,
): Promise<{ id: number; ackedAt: Date; ackedBy: string }> {
  const [row] = await sql<{ id: string; acked_at: Date; acked_by: string }[]>`
    update alerts set acked_at = coalesce(acked_at, now()), acked_by = coalesce(acked_by, ${by.slice(0, 128) || 'unknown'})
    where id = ${id} returning id, acked_at, acked_by`;
  if (!row) throw new ModemfleetError('unknown_alert', `no alert with id ${id}`);
  return { id: Number(row.id), ackedAt: row.acked_at, ackedBy: row.acked_by };
}
