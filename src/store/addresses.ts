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

/**
 * Whether `publicIp` was seen within the last `hours` on the modem `imei` (null: on any modem of the
 * farm): the "no reuse within H hours" rule of a rotation.
 */
export async function addressSeenWithin(
  sql: Sql,
  imei: string | null,
  publicIp: string,
  hours: number,
): Promise<boolean> {
  checkIp(publicIp, 'publicIp');
  const scope = imei === null ? sql`` : sql`and imei = ${imei}`;
  const [row] = await sql<{ seen: boolean }[]>`
    select exists (
      select 1 from modem_addresses
      where public_ip = ${publicIp}::inet and last_seen > now() - make_interval(hours => ${hours}) ${scope}
    ) as seen`;
  return row?.seen ?? false;
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

/** Address statistics over one window (issue 17): what a rotation really gives, per modem or farm. */
export interface AddressStats {
  /** Rotations done in the window. */
  rotations: number;
  /** Distinct public addresses seen through the port(s). */
  distinctAddresses: number;
  /** Distinct /24 networks among them (carriers often rotate within a few /24s). */
  distinctNetworks: number;
  /**
   * Share of the window's rotations whose new public address had been seen on the same modem
   * before (null without rotations).
   */
  reuseRate: number | null;
}

export const STATS_WINDOWS = { '24h': 24, '7d': 24 * 7 } as const;
export type StatsWindow = keyof typeof STATS_WINDOWS;

/** Statistics of one modem, or of the whole farm (`imei` null), over the last `hours`. */
export async function addressStats(sql: Sql, imei: string | null, hours: number): Promise<AddressStats> {
  const forModem = (column: ReturnType<Sql>) => (imei === null ? sql`true` : sql`${column} = ${imei}`);
  const [row] = await sql<{ rotations: number; reused: number; addresses: number; networks: number }[]>`
    with since as (select now() - make_interval(hours => ${hours}) as at),
    rotations as (
      select c.imei, c.claimed_at, c.result->>'publicIp' as public_ip
      from modem_commands c, since
      where c.kind = 'rotate' and c.status = 'done' and c.finished_at >= since.at
        and ${forModem(sql`c.imei`)}
    ),
    seen as (
      select a.public_ip from modem_addresses a, since
      where a.last_seen >= since.at and ${forModem(sql`a.imei`)}
    )
    select
      (select count(*)::int from rotations) as rotations,
      (select count(*)::int from rotations r
        where r.public_ip is not null and exists (
          select 1 from modem_addresses a
          where a.imei = r.imei and host(a.public_ip) = r.public_ip and a.first_seen < r.claimed_at)) as reused,
      (select count(distinct public_ip)::int from seen) as addresses,
      (select count(distinct network(set_masklen(public_ip, 24)))::int from seen where family(public_ip) = 4)
        as networks`;
  const rotations = row?.rotations ?? 0;
  return {
    rotations,
    distinctAddresses: row?.addresses ?? 0,
    distinctNetworks: row?.networks ?? 0,
    reuseRate: rotations === 0 ? null : Math.round(((row?.reused ?? 0) / rotations) * 1000) / 1000,
  };
}

/** Both windows at once. */
export async function addressStatsWindows(
  sql: Sql,
  imei: string | null,
): Promise<Record<StatsWindow, AddressStats>> {
  return {
    '24h': await addressStats(sql, imei, STATS_WINDOWS['24h']),
    '7d': await addressStats(sql, imei, STATS_WINDOWS['7d']),
  };
}
