import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { json } from './sqlJson.js';
import { HOST_ID_PATTERN, IMEI_PATTERN, type AlertInput, type HealthSample } from './types.js';

export const PROXY_HOST_PATTERN = /^[A-Za-z0-9.:_-]{1,253}$/;

/**
 * Register this host (or mark it started again). `proxyHost` is the address clients reach this
 * host's proxy ports at (shown by the API); unset keeps what was stored.
 */
export async function registerHost(
  sql: Sql,
  id: string,
  options: { name?: string; proxyHost?: string; proxyBackend?: '3proxy' | 'microsocks+tinyproxy' } = {},
): Promise<void> {
  if (!HOST_ID_PATTERN.test(id)) {
    throw new ModemfleetError(
      'invalid_host',
      `host id '${id.slice(0, 64)}' must be 1-63 letters, digits, '.', '_' or '-'`,
    );
  }
  const proxyHost = options.proxyHost ?? null;
  if (proxyHost !== null && !PROXY_HOST_PATTERN.test(proxyHost))
    throw new ModemfleetError(
      'invalid_host',
      `proxy host '${proxyHost.slice(0, 64)}' is not a host name or address`,
    );
  await sql`
    insert into hosts (id, name, proxy_host, proxy_backend)
    values (${id}, ${options.name ?? id}, ${proxyHost}, ${options.proxyBackend ?? null})
    on conflict (id) do update set name = excluded.name, started_at = now(), heartbeat_at = now(),
      stopped_at = null, stale_at = null, proxy_host = coalesce(excluded.proxy_host, hosts.proxy_host),
      proxy_backend = excluded.proxy_backend`;
}

/** The host is alive: its heartbeat, which also clears a stale mark (sql/0013; NOTIFY `host_fresh`). */
export async function heartbeatHost(sql: Sql, id: string): Promise<void> {
  await sql`update hosts set heartbeat_at = now(), stale_at = null where id = ${id}`;
}

export async function stopHost(sql: Sql, id: string): Promise<void> {
  await sql`update hosts set stopped_at = now(), heartbeat_at = now() where id = ${id}`;
}

/** Identity and placement facts read from a device, merged into its modems row. */
export interface ModemFacts {
  imei: string;
  hostId?: string;
  usbPath?: string | null;
  model?: string | null;
  iccid?: string | null;
  imsi?: string | null;
  firmware?: string | null;
  operator?: string | null;
  interface?: string | null;
}

/** Insert or update the descriptive columns of a modem (never its state: the journal owns that). */
export async function upsertModem(sql: Sql, facts: ModemFacts): Promise<{ previousIccid: string | null }> {
  if (!IMEI_PATTERN.test(facts.imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  const [row] = await sql<{ previous_iccid: string | null }[]>`
    with before as (select iccid from modems where imei = ${facts.imei})
    insert into modems as m (imei, host_id, usb_path, model, iccid, imsi, firmware, operator, interface)
    values (${facts.imei}, ${facts.hostId ?? null}, ${facts.usbPath ?? null}, ${facts.model ?? null}, ${facts.iccid ?? null},
            ${facts.imsi ?? null}, ${facts.firmware ?? null}, ${facts.operator ?? null}, ${facts.interface ?? null})
    on conflict (imei) do update set
      host_id = coalesce(excluded.host_id, m.host_id),
      usb_path = coalesce(excluded.usb_path, m.usb_path),
      model = coalesce(excluded.model, m.model),
      iccid = coalesce(excluded.iccid, m.iccid),
      imsi = coalesce(excluded.imsi, m.imsi),
      firmware = coalesce(excluded.firmware, m.firmware),
      operator = coalesce(excluded.operator, m.operator),
      interface = coalesce(excluded.interface, m.interface),
      last_seen_at = now(), updated_at = now()
    returning (select iccid from before) as previous_iccid`;
  return { previousIccid: row?.previous_iccid ?? null };
}

export async function recordHealth(sql: Sql, samples: readonly HealthSample[]): Promise<void> {
  if (samples.length === 0) return;
  const payload = json(
    sql,
    samples.map((s) => ({
      imei: s.imei,
      at: (s.at ?? new Date()).toISOString(),
      rssi: s.rssi ?? null,
      rsrp: s.rsrp ?? null,
      rsrq: s.rsrq ?? null,
      sinr: s.sinr ?? null,
      operator: s.operator ?? null,
      technology: s.technology ?? null,
    })),
  );
  await sql`
    with s as (
      select * from jsonb_to_recordset(${payload}::jsonb)
        as x(imei text, at timestamptz, rssi smallint, rsrp smallint, rsrq smallint, sinr real, operator text, technology text)
    ),
    h as (
      insert into modem_health (imei, at, rssi, rsrp, rsrq, sinr, operator, technology)
      select imei, at, rssi, rsrp, rsrq, sinr, operator, technology from s
    )
    update modems m set rssi = s.rssi, rsrp = s.rsrp, rsrq = s.rsrq, sinr = s.sinr,
      operator = coalesce(s.operator, m.operator), technology = coalesce(s.technology, m.technology)
    from (select distinct on (imei) * from s order by imei, at desc) s
    where m.imei = s.imei`;
}

export async function pruneHealth(sql: Sql, olderThanSeconds: number): Promise<number> {
  const [row] = await sql<
    { n: number }[]
  >`select prune_modem_health(make_interval(secs => ${olderThanSeconds})) as n`;
  return row?.n ?? 0;
}

export async function raiseAlert(sql: Sql, alert: AlertInput): Promise<number> {
  const [row] = await sql<{ id: number }[]>`
    insert into alerts (host_id, imei, kind, severity, message, detail, raised_at)
    values (${alert.hostId ?? null}, ${alert.imei ?? null}, ${alert.kind}, ${alert.severity},
            ${alert.message.slice(0, 1000)}, ${json(sql, alert.detail ?? {})}::jsonb,
            coalesce(${alert.raisedAt ?? null}::timestamptz, now()))
    returning id`;
  if (!row) throw new Error('alert insert returned nothing');
  return row.id;
}

export async function resolveAlert(sql: Sql, id: number): Promise<void> {
  await sql`update alerts set resolved_at = now() where id = ${id} and resolved_at is null`;
}
