import type { Sql } from 'postgres';

/** Where and how a modem's proxy ports are reached (credentials included: for authenticated readers). */
export interface ProxyEndpoint {
  host: string | null;
  httpPort: number;
  socksPort: number;
  username: string;
  /** Null where the reader may not see passwords (a read-only API token). */
  password: string | null;
}

/** A modem as operators see it: its current row joined with its allocation on its host. */
export interface ModemView {
  imei: string;
  host: string | null;
  state: string;
  substate: string | null;
  /** Why it is in `error`; or why its port is closed while online (`quota_exceeded`, `expired`). */
  reason: string | null;
  since: Date;
  wanIp: string | null;
  /** What the internet sees through the modem's port (behind carrier NAT, not `wanIp`). */
  publicIp: string | null;
  httpPort: number | null;
  socksPort: number | null;
  proxy: ProxyEndpoint | null;
  operator: string | null;
  technology: string | null;
  rssi: number | null;
  rsrp: number | null;
  sinr: number | null;
  model: string | null;
  iccid: string | null;
  usbPath: string | null;
  desiredState: string;
  seq: number;
  lastSeenAt: Date;
  /**
   * Its host is marked dead (no heartbeat within `policy.hostDeadAfterMs`): `state` is the last one
   * it recorded, nobody supervises the modem now, and its commands fail with `host_unavailable`.
   */
  stale: boolean;
}

interface ModemViewRow {
  imei: string;
  host_id: string | null;
  state: string;
  substate: string | null;
  reason: string | null;
  state_since: Date;
  wan_ip: string | null;
  public_ip: string | null;
  http_port: number | null;
  socks_port: number | null;
  proxy_user: string | null;
  proxy_password: string | null;
  proxy_host: string | null;
  operator: string | null;
  technology: string | null;
  rssi: number | null;
  rsrp: number | null;
  sinr: number | null;
  model: string | null;
  iccid: string | null;
  usb_path: string | null;
  desired_state: string;
  seq: number;
  last_seen_at: Date;
  stale: boolean;
}

const toView = (r: ModemViewRow): ModemView => ({
  imei: r.imei,
  host: r.host_id,
  state: r.state,
  substate: r.substate,
  reason: r.reason,
  since: r.state_since,
  wanIp: r.wan_ip,
  publicIp: r.public_ip,
  httpPort: r.http_port,
  socksPort: r.socks_port,
  proxy:
    r.http_port !== null && r.socks_port !== null && r.proxy_user !== null && r.proxy_password !== null
      ? {
          host: r.proxy_host,
          httpPort: r.http_port,
          socksPort: r.socks_port,
          username: r.proxy_user,
          password: r.proxy_password,
        }
      : null,
  operator: r.operator,
  technology: r.technology,
  rssi: r.rssi,
  rsrp: r.rsrp,
  sinr: r.sinr,
  model: r.model,
  iccid: r.iccid,
  usbPath: r.usb_path,
  desiredState: r.desired_state,
  seq: r.seq,
  lastSeenAt: r.last_seen_at,
  stale: r.stale,
});

/** Which modems a listing returns: all, the ones named, or filtered; `limit` pages them by IMEI. */
export interface ModemListing {
  imei?: string;
  imeis?: readonly string[];
  host?: string;
  /** The top state (`online`) or the full one (`online.serving`, matched against the substate). */
  state?: string;
  /** Case-insensitive text in the IMEI, ICCID, operator, host, reason, addresses or ports. */
  q?: string;
  /** Paged: at most this many, ordered by IMEI (not by host and slot), after this IMEI. */
  limit?: number;
  after?: string;
}

/** Every modem (or the ones named or filtered), ordered by host and slot (by IMEI when paged). */
export async function listModems(sql: Sql, options: ModemListing = {}): Promise<ModemView[]> {
  if (options.imeis !== undefined && options.imeis.length === 0) return [];
  const conditions = [
    options.imei !== undefined ? sql`m.imei = ${options.imei}` : null,
    options.imeis !== undefined ? sql`m.imei in ${sql([...options.imeis])}` : null,
    options.host !== undefined ? sql`m.host_id = ${options.host}` : null,
    options.state !== undefined
      ? options.state.includes('.')
        ? sql`m.substate = ${options.state}`
        : sql`m.state = ${options.state}`
      : null,
    options.q !== undefined
      ? sql`position(lower(${options.q}) in lower(concat_ws(' ', m.imei, m.iccid, m.operator, m.host_id,
          coalesce(m.reason, q.closed_reason), host(m.public_ip), host(m.wan_ip), a.http_port, a.socks_port))) > 0`
      : null,
    options.after !== undefined ? sql`m.imei > ${options.after}` : null,
  ].filter((c) => c !== null);
  const where = conditions.reduce((acc, c) => sql`${acc} and ${c}`, sql`true`);
  const order =
    options.limit !== undefined
      ? sql`order by m.imei limit ${options.limit}`
      : sql`order by m.host_id nulls last, a.slot nulls last, m.imei`;
  const rows = await sql<ModemViewRow[]>`
    select m.imei, m.host_id, m.state, m.substate, coalesce(m.reason, q.closed_reason) as reason,
           m.state_since, host(m.wan_ip) as wan_ip,
           host(m.public_ip) as public_ip, a.http_port, a.socks_port, a.proxy_user, a.proxy_password, h.proxy_host,
           m.operator, m.technology, m.rssi, m.rsrp, m.sinr, m.model, m.iccid, m.usb_path,
           m.desired_state, m.seq, m.last_seen_at, h.stale_at is not null as stale
    from modems m
    left join allocations a on a.imei = m.imei and a.host_id = m.host_id
    left join hosts h on h.id = m.host_id
    left join modem_quotas q on q.imei = m.imei
    where ${where}
    ${order}`;
  return rows.map(toView);
}

/** Every modem's IMEI in the order of an unpaged listing (by host and slot). */
export async function modemOrder(sql: Sql): Promise<string[]> {
  const rows = await sql<{ imei: string }[]>`
    select m.imei from modems m left join allocations a on a.imei = m.imei and a.host_id = m.host_id
    order by m.host_id nulls last, a.slot nulls last, m.imei`;
  return rows.map((r) => r.imei);
}

/** What `/metrics` shows of every modem: one narrow row each (no ports, no credentials). */
export interface ModemGaugeRow {
  imei: string;
  host: string | null;
  state: string;
  rssi: number | null;
  rsrp: number | null;
  sinr: number | null;
  /** Its host is marked dead. */
  stale: boolean;
}

/** Every modem's state and signal, for metrics (counts by host and state are derived from it). */
export async function modemGauges(sql: Sql): Promise<ModemGaugeRow[]> {
  const rows = await sql<(Omit<ModemGaugeRow, 'host'> & { host_id: string | null })[]>`
    select m.imei, m.host_id, m.state, m.rssi, m.rsrp, m.sinr, h.stale_at is not null as stale
    from modems m left join hosts h on h.id = m.host_id order by m.host_id, m.state, m.imei`;
  return rows.map(({ host_id, ...r }) => ({ ...r, host: host_id }));
}
