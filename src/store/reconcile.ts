import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { IMEI_PATTERN } from './types.js';

/** What the supervisor needs of a modem to bring it back: where it was, its journal, its wishes. */
export interface ModemRecord {
  imei: string;
  hostId: string | null;
  usbPath: string | null;
  state: string;
  seq: number;
  desired: 'enabled' | 'disabled';
  iccid: string | null;
}

interface Row {
  imei: string;
  host_id: string | null;
  usb_path: string | null;
  state: string;
  seq: number;
  desired_state: 'enabled' | 'disabled';
  iccid: string | null;
}

const toRecord = (r: Row): ModemRecord => ({
  imei: r.imei,
  hostId: r.host_id,
  usbPath: r.usb_path,
  state: r.state,
  seq: Number(r.seq),
  desired: r.desired_state,
  iccid: r.iccid,
});

/** Every modem this host had, for reconciliation on start. */
export async function hostModems(sql: Sql, hostId: string): Promise<ModemRecord[]> {
  const rows = await sql<Row[]>`
    select imei, host_id, usb_path, state, seq, desired_state, iccid
    from modems where host_id = ${hostId} order by imei`;
  return rows.map(toRecord);
}

export async function modemRecord(sql: Sql, imei: string): Promise<ModemRecord | null> {
  const [row] = await sql<Row[]>`
    select imei, host_id, usb_path, state, seq, desired_state, iccid from modems where imei = ${imei}`;
  return row ? toRecord(row) : null;
}

/** The operator's wish for a modem, kept across restarts (a disabled modem stays disabled). */
export async function setDesired(sql: Sql, imei: string, desired: 'enabled' | 'disabled'): Promise<void> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  await sql`update modems set desired_state = ${desired}, updated_at = now() where imei = ${imei}`;
}
