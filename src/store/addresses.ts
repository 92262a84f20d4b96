import { isIP } from 'node:net';
import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';

/** One (public, private) pair a modem was seen with (`GET /api/modems/:imei/addresses`). */
export interface AddressSeen {
  publicIp: string;
  privateIp: string;
  firstSeen: Date;
  lastSeen: Date;
  timesSeen: number;
}

const checkIp = (value: string, what: string): string => {
  if (isIP(value) === 0) throw new ModemfleetError('invalid_address', `${what}: not an IP address`);
  return value;
};

/**
 * The public address seen through a modem's port, with the private one it had then: the pair's
 * history row is added or counted, and the modem row shows it. Returns the public address the row
 * showed before (null: none).
 */
export async function recordAddress(
  sql: Sql,
  imei: string,
  publicIp: string,
  privateIp: string,
): Promise<{ previous: string | null }> {
  checkIp(publicIp, 'publicIp');
  checkIp(privateIp, 'privateIp');
  const [row] = await sql<{ previous: string | null }[]>`
    with pair as (
      insert into modem_addresses (imei, public_ip, private_ip) values (${imei}, ${publicIp}, ${privateIp})
      on conflict (imei, public_ip, private_ip)
        do update set last_seen = now(), times_seen = modem_addresses.times_seen + 1
    ),
    -- every CTE sees the row as it was: the address shown before this one
    before as (select host(public_ip) as previous from modems where imei = ${imei})
    update modems m set public_ip = ${publicIp}, public_ip_at = now()
    from before
    where m.imei = ${imei}
    returning before.previous`;
  return { previous: row?.previous ?? null };
}

/** A modem's address history, newest first: at most `limit` pairs last seen before `before`. */
export async function listAddresses(
  sql: Sql,
  imei: string,
  options: { before?: Date | undefined; limit?: number | undefined } = {},
): Promise<AddressSeen[]> {
  const limit = Math.min(Math.max(options.limit ?? 100, 1), 1000);
  const before = options.before ? sql`and last_seen < ${options.before}` : sql``;
  const rows = await sql<
    { public_ip: string; private_ip: string; first_seen: Date; last_seen: Date; times_seen: number }[]
  >`
    select host(public_ip) as public_ip, host(private_ip) as private_ip, first_seen, last_seen, times_seen
    from modem_addresses where imei = ${imei} ${before}
    order by last_seen desc limit ${limit}`;
  return rows.map((r) => ({
    publicIp: r.public_ip,
    privateIp: r.private_ip,
    firstSeen: r.first_seen,
    lastSeen: r.last_seen,
    timesSeen: r.times_seen,
  }));
}
