import type { Sql } from 'postgres';

/** A modem as operators see it: its current row joined with its allocation on its host. */
export interface ModemView {
  imei: string;
  host: string | null;
  state: string;
  substate: string | null;
  reason: string | null;
  since: Date;
  wanIp: string | null;
  httpPort: number | null;
  socksPort: number | null;
  operator: string | null;
  technology: string | null;
  rssi: number | null;
  desiredState: string;
  seq: number;
}

export async function listModems(sql: Sql, options: { imei?: string } = {}): Promise<ModemView[]> {
  const rows = await sql<
    {
      imei: string;
      host_id: string | null;
      state: string;
      substate: string | null;
      reason: string | null;
      state_since: Date;
      wan_ip: string | null;
      http_port: number | null;
      socks_port: number | null;
      operator: string | null;
      technology: string | null;
      rssi: number | null;
      desired_state: string;
      seq: number;
    }[]
  >`select m.imei, m.host_id, m.state, m.substate, m.reason, m.state_since, host(m.wan_ip) as wan_ip,
           a.http_port, a.socks_port, m.operator, m.technology, m.rssi, m.desired_state, m.seq
    from modems m left join allocations a on a.imei = m.imei and a.host_id = m.host_id
    where ${options.imei === undefined ? sql`true` : sql`m.imei = ${options.imei}`}
    order by m.host_id nulls last, a.slot nulls last, m.imei`;
  return rows.map((r) => ({
    imei: r.imei,
    host: r.host_id,
    state: r.state,
    substate: r.substate,
    reason: r.reason,
    since: r.state_since,
    wanIp: r.wan_ip,
    httpPort: r.http_port,
    socksPort: r.socks_port,
    operator: r.operator,
    technology: r.technology,
    rssi: r.rssi,
    desiredState: r.desired_state,
    seq: r.seq,
  }));
}
