import { isIPv4 } from 'node:net';
import type { NftTable } from '../../net/nftRuleset.js';
import { ModemfleetError } from '../../util/errors.js';

/**
 * The lab carrier's NAT (docs: dataplane.md, "Carrier NAT"): mobile carriers hand a modem a
 * private address and NAT it, so the address the internet sees through a port is a public one of
 * the carrier's pool, not `+CGPADDR`'s. Each private address sticks to one pool address, picked
 * by a hash of it (`jhash ip saddr mod N map { 0 : a, ... }`): two modems can share a public
 * address, and a re-attach (a new private address) may keep it or not. The hash's seed is drawn
 * by the kernel each time the table is applied, so changing the pool reshuffles every mapping.
 *
 * The echo server lives in the carrier namespace itself, so the translation is done on `input`
 * (what arrives from a modem link, `cr*`). Its answers go to the public address and are routed
 * before conntrack translates them back: each pool address needs a local route in the carrier
 * namespace (measured: without one the answer is dropped as unroutable).
 */

/** The table's name in the carrier namespace (family `ip`). */
export const CARRIER_NAT_TABLE = 'mf_carrier_nat';

/** A default pool of "public" addresses: TEST-NET-3 (RFC 5737), never routed on the internet. */
export const DEFAULT_NAT_POOL: readonly string[] = ['203.0.113.10', '203.0.113.11', '203.0.113.12'];

/** The most addresses a pool may have (the renderer's bound of a jhash map). */
export const MAX_NAT_POOL = 256;

const v4 = (a: string): number => a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
const inPrefix = (a: string, base: string, bits: number): boolean =>
  Math.floor(v4(a) / 2 ** (32 - bits)) === Math.floor(v4(base) / 2 ** (32 - bits));

/** Ranges a pool address may not be in: the lab's own networks and what is not unicast. */
const RESERVED: readonly [string, number, string][] = [
  ['0.0.0.0', 8, 'this network'],
  ['127.0.0.0', 8, 'loopback'],
  ['100.64.0.0', 10, "the carrier's private range (the modems' addresses)"],
  ['198.18.0.0', 15, "the lab's echo network"],
  ['192.168.77.0', 24, "the lab's management network"],
  ['224.0.0.0', 3, 'multicast or reserved'],
];

/** A pool as given, checked: 1-256 distinct IPv4 unicast addresses outside the lab's own ranges. */
export function checkNatPool(pool: unknown): string[] {
  if (!Array.isArray(pool) || pool.length < 1 || pool.length > MAX_NAT_POOL)
    throw new ModemfleetError('invalid_lab', `lab nat pool: 1-${MAX_NAT_POOL} IPv4 addresses`);
  const seen = new Set<string>();
  for (const a of pool as unknown[]) {
    if (typeof a !== 'string' || !isIPv4(a))
      throw new ModemfleetError('invalid_lab', `lab nat pool: ${JSON.stringify(a)} is not an IPv4 address`);
    const reserved = RESERVED.find(([base, bits]) => inPrefix(a, base, bits));
    if (reserved) throw new ModemfleetError('invalid_lab', `lab nat pool: ${a} is in ${reserved[2]}`);
    if (seen.has(a)) throw new ModemfleetError('invalid_lab', `lab nat pool: ${a} is listed twice`);
    seen.add(a);
  }
  return [...seen];
}

/** The carrier's NAT table: what arrives from a modem link (`linkPrefix*`) is SNATed to the pool. */
export function carrierNatTable(pool: readonly string[], linkPrefix: string): NftTable {
  return {
    family: 'ip',
    name: CARRIER_NAT_TABLE,
    chains: [
      {
        name: 'in_nat',
        // 100: NF_IP_PRI_NAT_SRC (nft names `srcnat` only on postrouting)
        base: { type: 'nat', hook: 'input', priority: 100 },
        rules: [
          {
            match: [{ match: 'iifname', value: `${linkPrefix}*` }],
            then: [{ do: 'snatPool', family: 'ip', pool }],
            comment: 'carrier nat',
          },
        ],
      },
    ],
  };
}
