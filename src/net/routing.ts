import { isIPv4 } from 'node:net';
import { ModemfleetError } from '../util/errors.js';
import { IpError, ip, ipBatch, ipJson, type IpOptions } from './ip.js';

/**
 * Policy routing of one modem: its own table with a default route through its link and a
 * blackhole of the lowest priority (fail closed: without the modem route, traffic fails instead of
 * leaking through the host's default route), and a rule sending everything from the modem's address
 * into that table, at an explicit priority (the kernel would otherwise pick one and pile up
 * duplicates). Optionally a uidrange rule for the modem's proxy user (DNS leak guard).
 * shared/reference/dataplane.md has the measured facts behind each step.
 */
export interface ModemRoute {
  /** The modem's network interface (wwan0, or a veth in the lab). */
  iface: string;
  /** The modem's WAN address. */
  address: string;
  /** When set, the address is put on the link with this prefix (raw-ip QMI links need it). */
  prefix?: number | undefined;
  /** Ethernet-style links route `via` a gateway; raw-ip point-to-point links use `dev` only. */
  gateway?: string | null | undefined;
  /** Routing table (never the kernel's 253-255). */
  table: number;
  /** Priority of the `from ADDRESS` rule; the uidrange rule takes `priority + 1`. */
  priority: number;
  /** The uid the modem's proxy runs under: its sockets (DNS included) use the modem's table. */
  uid?: number | undefined;
}

const IFACE = /^[A-Za-z0-9._-]{1,15}$/;
const BLACKHOLE_METRIC = 4294967295;
const MAX_RULE_DELETES = 64;

/** Every problem of a route spec; strings from modems never reach `ip` unchecked. */
export function checkRoute(r: ModemRoute): string[] {
  const problems: string[] = [];
  if (!IFACE.test(r.iface)) problems.push(`iface: invalid interface name`);
  if (!isIPv4(r.address)) problems.push(`address: not an IPv4 address`);
  if (r.gateway != null && !isIPv4(r.gateway)) problems.push(`gateway: not an IPv4 address`);
  if (r.prefix !== undefined && (!Number.isInteger(r.prefix) || r.prefix < 8 || r.prefix > 32))
    problems.push('prefix: must be 8-32');
  if (!Number.isInteger(r.table) || r.table < 1 || r.table > 2 ** 31 - 1 || [253, 254, 255].includes(r.table))
    problems.push('table: must be 1-2147483647 and not 253-255 (default, main, local)');
  if (!Number.isInteger(r.priority) || r.priority < 1 || r.priority > 32000)
    problems.push('priority: must be 1-32000 (below the main table rule)');
  if (r.uid !== undefined && (!Number.isInteger(r.uid) || r.uid < 1 || r.uid > 2 ** 31 - 2))
    problems.push('uid: must be a positive integer');
  return problems;
}

function assertRoute(r: ModemRoute): void {
  const problems = checkRoute(r);
  if (problems.length)
    throw new ModemfleetError('invalid_route', `invalid modem route: ${problems.join('; ')}`);
}

/** Deletes every rule at `priority` (one per call; loops until none is left). */
async function deleteRules(priority: number, options: IpOptions): Promise<number> {
  const rules = await ipJson<{ priority?: number }>(['rule', 'show'], options);
  const n = rules.filter((r) => r.priority === priority).length;
  for (let i = 0; i < Math.min(n, MAX_RULE_DELETES); i++)
    await ip(['rule', 'del', 'priority', String(priority)], options);
  return n;
}

/**
 * Applies the modem's routing; idempotent (applying twice equals applying once: stale rules at
 * its priorities are removed first). `previousAddress` is taken off the link after a rotation.
 */
export async function applyRoute(
  r: ModemRoute,
  options: IpOptions = {},
  previousAddress?: string | null,
): Promise<void> {
  assertRoute(r);
  const t = String(r.table);
  if (previousAddress && previousAddress !== r.address && isIPv4(previousAddress) && r.prefix !== undefined)
    // the old address may be gone already (the link was reset): only that failure is expected
    await ip(['addr', 'del', `${previousAddress}/${r.prefix}`, 'dev', r.iface], options).catch(
      (err: unknown) => {
        if (!(err instanceof IpError) || err.code !== 'ip_failed') throw err;
      },
    );
  const lines = [`link set ${r.iface} up`];
  if (r.prefix !== undefined) lines.push(`addr replace ${r.address}/${r.prefix} dev ${r.iface}`);
  lines.push(
    r.gateway
      ? `route replace default via ${r.gateway} dev ${r.iface} table ${t}`
      : `route replace default dev ${r.iface} table ${t}`,
    `route replace blackhole default metric ${BLACKHOLE_METRIC} table ${t}`,
  );
  await ipBatch(lines, options);
  await deleteRules(r.priority, options);
  await ip(['rule', 'add', 'priority', String(r.priority), 'from', r.address, 'lookup', t], options);
  await deleteRules(r.priority + 1, options);
  if (r.uid !== undefined)
    await ip(
      ['rule', 'add', 'priority', String(r.priority + 1), 'uidrange', `${r.uid}-${r.uid}`, 'lookup', t],
      options,
    );
}

interface RuleJson {
  priority?: number;
  src?: string;
  table?: string;
  uid_start?: number;
  uid_end?: number;
}
interface RouteJson {
  type?: string;
  dst?: string;
  dev?: string;
  gateway?: string;
  metric?: number;
}

/** What is wrong with the applied routing, read back from `ip -json`; empty when it is right. */
export async function verifyRoute(r: ModemRoute, options: IpOptions = {}): Promise<string[]> {
  assertRoute(r);
  const problems: string[] = [];
  const rules = await ipJson<RuleJson>(['rule', 'show'], options);
  const mine = rules.filter((x) => x.priority === r.priority);
  if (mine.length !== 1 || mine[0]?.src !== r.address || mine[0]?.table !== String(r.table))
    problems.push(
      `rule ${r.priority}: expected one 'from ${r.address} lookup ${r.table}', found ${mine.length}`,
    );
  if (r.uid !== undefined) {
    const uid = rules.filter((x) => x.priority === r.priority + 1);
    if (
      uid.length !== 1 ||
      uid[0]?.table !== String(r.table) ||
      uid[0]?.uid_start !== r.uid ||
      uid[0]?.uid_end !== r.uid
    )
      problems.push(`rule ${r.priority + 1}: expected one uidrange rule into ${r.table}`);
  }
  const routes = await ipJson<RouteJson>(['route', 'show', 'table', String(r.table)], options);
  const modem = routes.find((x) => x.dst === 'default' && x.type !== 'blackhole');
  if (!modem || modem.dev !== r.iface || (r.gateway ? modem.gateway !== r.gateway : false))
    problems.push(`table ${r.table}: no default route through ${r.iface}`);
  if (!routes.some((x) => x.type === 'blackhole' && x.dst === 'default'))
    problems.push(`table ${r.table}: no blackhole default (would fail open)`);
  return problems;
}

/** Removes the modem's rules and table (on removal, or before its table is reused). Idempotent. */
export async function removeRoute(
  r: Pick<ModemRoute, 'table' | 'priority'>,
  options: IpOptions = {},
): Promise<void> {
  await deleteRules(r.priority, options);
  await deleteRules(r.priority + 1, options);
  const routes = await ipJson<RouteJson>(['route', 'show', 'table', String(r.table)], options);
  if (routes.length > 0) await ip(['route', 'flush', 'table', String(r.table)], options);
}
