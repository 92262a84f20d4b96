import { randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { DEFAULT_RANGES, slotCount, type AllocationRanges } from '../allocationRanges.js';
import { ModemfleetError } from '../util/errors.js';
import { errorCode, SQLSTATE } from './pgErrors.js';
import { HOST_ID_PATTERN, IMEI_PATTERN, type Allocation } from './types.js';

interface AllocationRow {
  host_id: string;
  imei: string;
  slot: number;
  http_port: number;
  socks_port: number;
  routing_table: number;
  iface_id: number;
  proxy_user: string;
  proxy_password: string;
}

const toAllocation = (r: AllocationRow): Allocation => ({
  hostId: r.host_id,
  imei: r.imei,
  slot: r.slot,
  httpPort: r.http_port,
  socksPort: r.socks_port,
  routingTable: r.routing_table,
  ifaceId: r.iface_id,
  proxyUser: r.proxy_user,
  proxyPassword: r.proxy_password,
});

/**
 * The ports, routing table and interface id of a modem on a host: the ones it had before (sticky per
 * IMEI), else the lowest free slot. Allocation on one host is serialised by a transaction-level
 * advisory lock and every value is also under a unique constraint, so concurrent callers never get
 * the same value. Throws `no_free_port` when the ranges are exhausted.
 */
export async function allocate(
  sql: Sql,
  hostId: string,
  imei: string,
  ranges: AllocationRanges = DEFAULT_RANGES,
): Promise<Allocation> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', `allocate: imei must be 15 digits`);
  if (!HOST_ID_PATTERN.test(hostId)) throw new ModemfleetError('invalid_host', `allocate: invalid host id`);
  const n = slotCount(ranges);
  for (let attempt = 0; ; attempt++) {
    try {
      return await sql.begin(async (tx) => {
        await tx`select pg_advisory_xact_lock(hashtext(${`modemfleet.allocate:${hostId}`}))`;
        const [existing] = await tx<
          AllocationRow[]
        >`select * from allocations where host_id = ${hostId} and imei = ${imei}`;
        if (existing) return toAllocation(existing);
        const [free] = await tx<{ s: number }[]>`
          select s::int from generate_series(0, ${n - 1}::int) s
          where not exists (select 1 from allocations a where a.host_id = ${hostId} and a.slot = s)
            and not exists (select 1 from allocations a where a.host_id = ${hostId} and a.http_port = ${ranges.httpPort.from}::int + s)
            and not exists (select 1 from allocations a where a.host_id = ${hostId} and a.socks_port = ${ranges.socksPort.from}::int + s)
            and not exists (select 1 from allocations a where a.host_id = ${hostId} and a.routing_table = ${ranges.routingTable.from}::int + s)
            and not exists (select 1 from allocations a where a.host_id = ${hostId} and a.iface_id = ${ranges.ifaceId.from}::int + s)
          order by s limit 1`;
        if (!free) {
          throw new ModemfleetError(
            'no_free_port',
            `no free port/table slot left on host ${hostId} (${n} slots in the configured ranges)`,
          );
        }
        const s = free.s;
        const [row] = await tx<AllocationRow[]>`
          insert into allocations (host_id, imei, slot, http_port, socks_port, routing_table, iface_id, proxy_user, proxy_password)
          values (${hostId}, ${imei}, ${s}, ${ranges.httpPort.from + s}, ${ranges.socksPort.from + s},
                  ${ranges.routingTable.from + s}, ${ranges.ifaceId.from + s},
                  ${`u${randomBytes(5).toString('hex')}`}, ${randomBytes(18).toString('base64url')})
          returning *`;
        if (!row) throw new Error('allocation insert returned nothing');
        return toAllocation(row);
      });
    } catch (err) {
      // Only a writer that bypassed the lock (hand-written SQL) can collide: take the next slot.
      if (errorCode(err) === SQLSTATE.uniqueViolation && attempt < 5) continue;
      if (errorCode(err) === SQLSTATE.foreignKeyViolation) {
        throw new ModemfleetError('unknown_host', `allocate: host ${hostId} is not registered`, {
          cause: err,
        });
      }
      throw err;
    }
  }
}

export async function listAllocations(sql: Sql, hostId: string): Promise<Allocation[]> {
  const rows = await sql<AllocationRow[]>`select * from allocations where host_id = ${hostId} order by slot`;
  return rows.map(toAllocation);
}
