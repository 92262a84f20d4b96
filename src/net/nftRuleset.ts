import { isIPv4, isIPv6 } from 'node:net';
import { ModemfleetError } from '../util/errors.js';

/**
 * nftables rulesets as data, and the one renderer that turns them into `nft -f` text (pure: no
 * I/O). Every value is checked before it reaches the text — names, addresses, prefixes, ports,
 * uids, marks, interface names, comments — and whatever a modem reported (an address, an
 * interface) can only enter a rule through these checks. A bad value throws `invalid_ruleset`
 * naming where it is; nothing is rendered, so nothing is applied.
 *
 * A table is always applied whole: the text first creates (if missing) and deletes the table,
 * then defines it, in one `nft -f` transaction. Re-applying is idempotent, a failure changes
 * nothing, and the table holds exactly what was given (which also resets its counters and quotas).
 */

export type NftFamily = 'ip' | 'ip6' | 'inet';
/** The address family of a match or a NAT statement. */
export type AddrFamily = 'ip' | 'ip6';
export type NftHook = 'prerouting' | 'input' | 'forward' | 'output' | 'postrouting';
export type NftPriority = 'raw' | 'mangle' | 'dstnat' | 'filter' | 'security' | 'srcnat';
export type CtState = 'new' | 'established' | 'related' | 'invalid' | 'untracked';

/** A named set of this table, e.g. `{ set: 'public_pool' }`. */
export interface SetRef {
  set: string;
}
export interface NumRange {
  from: number;
  to: number;
}

export type NftMatch =
  /** An address, a prefix (`10.0.0.0/8`) or a range (`a-b`); several: any of them. */
  | {
      match: 'saddr' | 'daddr';
      family: AddrFamily;
      value: string | readonly string[] | SetRef;
      not?: boolean;
    }
  /** An interface name; a trailing `*` matches every name with that prefix. */
  | { match: 'iifname' | 'oifname'; value: string | readonly string[] | SetRef; not?: boolean }
  | { match: 'l4proto'; value: 'tcp' | 'udp' | 'icmp' | 'icmpv6'; not?: boolean }
  | {
      match: 'sport' | 'dport';
      proto: 'tcp' | 'udp';
      value: number | NumRange | readonly (number | NumRange)[] | SetRef;
      not?: boolean;
    }
  /** The uid / gid of the local socket (output and postrouting): per-uid rules for the proxies. */
  | { match: 'skuid' | 'skgid'; value: number | NumRange | SetRef; not?: boolean }
  | { match: 'mark'; value: number; not?: boolean }
  | { match: 'ctstate'; value: readonly CtState[] }
  /** The kernel's type of the destination (`fib daddr type`): `local` is every address of this host. */
  | { match: 'daddrType'; value: 'local' | 'broadcast' | 'multicast'; not?: boolean }
  /** Only in `inet` tables. */
  | { match: 'nfproto'; value: 'ipv4' | 'ipv6' };

export type NftStatement =
  /** An anonymous counter, or a named counter of the table. */
  | { do: 'counter'; name?: string }
  /** A named quota of the table: matches once the quota is spent (`over`) or until it is. */
  | { do: 'quota'; name: string }
  | { do: 'accept' | 'drop' | 'return' }
  | { do: 'reject'; tcpReset?: boolean }
  | { do: 'jump' | 'goto'; chain: string }
  | { do: 'masquerade' }
  | { do: 'snat'; family: AddrFamily; to: string }
  /** Carrier-style NAT: each source address sticks to one address of the pool (jhash of saddr). */
  | { do: 'snatPool'; family: AddrFamily; pool: readonly string[] }
  | { do: 'dnat'; family: AddrFamily; to: string; port?: number }
  /** To this port of the address the packet came to (local clients: loopback). */
  | { do: 'redirect'; port: number };

export interface NftRule {
  match?: readonly NftMatch[];
  then: readonly NftStatement[];
  /** Names the rule in `readTable` (e.g. `modem 866834040000017`). */
  comment?: string;
}

export interface NftChain {
  name: string;
  /** A base chain (attached to a hook); without it a regular chain, reached by jump/goto. */
  base?: {
    type: 'filter' | 'nat' | 'route';
    hook: NftHook;
    priority: number | NftPriority;
    policy?: 'accept' | 'drop';
  };
  rules: readonly NftRule[];
}

export interface NftSet {
  name: string;
  type: 'ipv4_addr' | 'ipv6_addr' | 'inet_service' | 'ifname' | 'uid' | 'gid';
  elements: readonly (string | number)[];
}

export interface NftQuota {
  name: string;
  bytes: number;
  /** true: the quota matches once `bytes` are spent (`over`); false: until they are. */
  over: boolean;
}

export interface NftTable {
  family: NftFamily;
  name: string;
  sets?: readonly NftSet[];
  counters?: readonly string[];
  quotas?: readonly NftQuota[];
  chains: readonly NftChain[];
}

export class NftRulesetError extends ModemfleetError {
  constructor(message: string) {
    super('invalid_ruleset', message);
    this.name = 'NftRulesetError';
  }
}

/** Bounds: a ruleset is input like any other. */
const MAX_RULES = 10_000;
const MAX_ELEMENTS = 65_536;
const MAX_POOL = 256;

/**
 * Table, chain, set, counter and quota names: lower-case letters and digits with at least one `_`
 * (`mf_carrier`, `post_nat`). nft's keywords never contain `_` and nft 1.0 cannot quote a name, so
 * a name like `counter` or `snat` would be a syntax error: with the `_` it cannot be one.
 */
const NAME = /^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$/;
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const COMMENT = /^[A-Za-z0-9_.:,@/=+-](?:[A-Za-z0-9 _.:,@/=+-]{0,126}[A-Za-z0-9_.:,@/=+-])?$/;
const PRIORITIES: readonly NftPriority[] = ['raw', 'mangle', 'dstnat', 'filter', 'security', 'srcnat'];
const CT_STATES: readonly CtState[] = ['new', 'established', 'related', 'invalid', 'untracked'];
const HOOKS: readonly NftHook[] = ['prerouting', 'input', 'forward', 'output', 'postrouting'];

/** What a check needs to say where a bad value is. */
type Where = string;

const show = (value: unknown): string => {
  const text = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : String(value);
  return text.length > 90 ? `${text.slice(0, 90)}...` : text;
};

function fail(where: Where, what: string, value: unknown): never {
  throw new NftRulesetError(`${where}: ${show(value)} ${what}`);
}

export function checkName(name: unknown, where: Where): string {
  if (typeof name !== 'string' || name.length > 64 || !NAME.test(name))
    fail(where, "is not a name (a-z, 0-9, at least one '_', at most 64)", name);
  return name;
}

function checkInt(value: unknown, min: number, max: number, where: Where, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max)
    fail(where, `is not ${what} (${min}-${max})`, value);
  return value;
}

export const checkPort = (value: unknown, where: Where): number =>
  checkInt(value, 1, 65_535, where, 'a port');
export const checkId = (value: unknown, where: Where): number =>
  checkInt(value, 0, 4_294_967_294, where, 'a uid/gid');

/** An interface name (IFNAMSIZ), or with `wildcard` a prefix ending in `*`. */
export function checkIfname(value: unknown, where: Where, wildcard = false): string {
  if (typeof value !== 'string') fail(where, 'is not an interface name', value);
  const base = wildcard && value.endsWith('*') ? value.slice(0, -1) : value;
  if (!IFNAME.test(base) || base === '.' || base === '..' || (base !== value && base.length > 14))
    fail(where, 'is not an interface name', value);
  return value;
}

/** An IPv4 address as a number. */
export function v4Number(address: string): number {
  return address.split('.').reduce((n, octet) => n * 256 + Number(octet), 0);
}

/** An IPv6 address (`::` and an IPv4 tail allowed) as 128 bits. */
export function v6Bits(address: string): bigint {
  // expand :: and an embedded IPv4 tail, then read 8 groups of 16 bits
  let text = address;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4?.[1]) {
    const n = v4Number(v4[1]);
    text = `${text.slice(0, -v4[1].length)}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const [head = '', tail] = text.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return groups.reduce((n, g) => (n << 16n) | BigInt(parseInt(g || '0', 16)), 0n);
}

/** One address of the family, as nft reads it (no zone, no brackets). */
export function checkAddress(value: unknown, family: AddrFamily, where: Where): string {
  const ok =
    typeof value === 'string' &&
    (family === 'ip' ? isIPv4(value) : isIPv6(value) && /^[0-9A-Fa-f:.]+$/.test(value));
  if (!ok) fail(where, `is not an ${family === 'ip' ? 'IPv4' : 'IPv6'} address`, value);
  return value;
}

/** An address, a prefix with no host bits set, or a range `a-b` with a <= b. */
export function checkAddressSpec(value: unknown, family: AddrFamily, where: Where): string {
  if (typeof value !== 'string') return checkAddress(value, family, where);
  const bits = family === 'ip' ? 32 : 128;
  const slash = value.split('/');
  if (slash.length === 2) {
    const [address = '', lenText = ''] = slash;
    checkAddress(address, family, where);
    const len = /^\d{1,3}$/.test(lenText) ? Number(lenText) : -1;
    if (len < 0 || len > bits) fail(where, `has an invalid prefix length (0-${bits})`, value);
    const hostBits =
      family === 'ip'
        ? len < 32 && v4Number(address) % 2 ** (32 - len) !== 0
        : len < 128 && (v6Bits(address) & ((1n << BigInt(128 - len)) - 1n)) !== 0n;
    if (hostBits) fail(where, 'has host bits set (use the network address)', value);
    return value;
  }
  const dash = value.split('-');
  if (dash.length === 2) {
    const [from = '', to = ''] = dash;
    checkAddress(from, family, where);
    checkAddress(to, family, where);
    const ordered = family === 'ip' ? v4Number(from) <= v4Number(to) : v6Bits(from) <= v6Bits(to);
    if (!ordered) fail(where, 'is a range that ends before it starts', value);
    return value;
  }
  return checkAddress(value, family, where);
}

function checkRange(value: NumRange, check: (v: unknown, w: Where) => number, where: Where): string {
  const from = check(value.from, where);
  const to = check(value.to, where);
  if (from > to) fail(where, 'is a range that ends before it starts', `${from}-${to}`);
  return from === to ? String(from) : `${from}-${to}`;
}

const isRange = (v: unknown): v is NumRange => typeof v === 'object' && v !== null && 'from' in v;
const isSetRef = (v: unknown): v is SetRef => typeof v === 'object' && v !== null && 'set' in v;
const many = (items: readonly string[]): string =>
  items.length === 1 ? (items[0] ?? '') : `{ ${items.join(', ')} }`;

/** The objects of one table, for references (`@set`, `jump chain`, `counter name`). */
interface Scope {
  family: NftFamily;
  sets: Map<string, NftSet['type']>;
  counters: Set<string>;
  quotas: Set<string>;
  chains: Map<string, NftChain>;
}

function setRef(ref: SetRef, types: readonly NftSet['type'][], scope: Scope, where: Where): string {
  const name = checkName(ref.set, `${where}: set`);
  const type = scope.sets.get(name);
  if (!type) fail(where, 'names no set of this table', name);
  if (!types.includes(type)) fail(where, `names a set of type ${type}, not ${types.join(' or ')}`, name);
  return `@${name}`;
}

function checkFamily(family: AddrFamily, scope: Scope, where: Where): AddrFamily {
  if (family !== 'ip' && family !== 'ip6') fail(where, 'is not ip or ip6', family);
  if (scope.family !== 'inet' && scope.family !== family)
    fail(where, `does not belong in a table of family ${scope.family}`, family);
  return family;
}

function renderMatch(m: NftMatch, scope: Scope, where: Where): string {
  const op = 'not' in m && m.not ? '!= ' : '';
  switch (m.match) {
    case 'saddr':
    case 'daddr': {
      const family = checkFamily(m.family, scope, `${where}: ${m.match} family`);
      const value = isSetRef(m.value)
        ? setRef(m.value, [family === 'ip' ? 'ipv4_addr' : 'ipv6_addr'], scope, `${where}: ${m.match}`)
        : many(
            list(m.value, `${where}: ${m.match}`).map((a) =>
              checkAddressSpec(a, family, `${where}: ${m.match}`),
            ),
          );
      return `${family} ${m.match} ${op}${value}`;
    }
    case 'iifname':
    case 'oifname': {
      const value = isSetRef(m.value)
        ? setRef(m.value, ['ifname'], scope, `${where}: ${m.match}`)
        : many(
            list(m.value, `${where}: ${m.match}`).map(
              (n) => `"${checkIfname(n, `${where}: ${m.match}`, true)}"`,
            ),
          );
      return `${m.match} ${op}${value}`;
    }
    case 'l4proto':
      if (!['tcp', 'udp', 'icmp', 'icmpv6'].includes(m.value))
        fail(`${where}: l4proto`, 'is not tcp, udp, icmp or icmpv6', m.value);
      return `meta l4proto ${op}${m.value}`;
    case 'sport':
    case 'dport': {
      if (m.proto !== 'tcp' && m.proto !== 'udp')
        fail(`${where}: ${m.match}`, 'needs proto tcp or udp', m.proto);
      const at = `${where}: ${m.match}`;
      const one = (v: number | NumRange): string =>
        isRange(v) ? checkRange(v, checkPort, at) : String(checkPort(v, at));
      const value = isSetRef(m.value)
        ? setRef(m.value, ['inet_service'], scope, at)
        : Array.isArray(m.value)
          ? many(nonEmpty(m.value as readonly (number | NumRange)[], at).map(one))
          : one(m.value as number | NumRange);
      return `${m.proto} ${m.match} ${op}${value}`;
    }
    case 'skuid':
    case 'skgid': {
      const at = `${where}: ${m.match}`;
      const value = isSetRef(m.value)
        ? setRef(m.value, [m.match === 'skuid' ? 'uid' : 'gid'], scope, at)
        : isRange(m.value)
          ? checkRange(m.value, checkId, at)
          : String(checkId(m.value, at));
      return `meta ${m.match} ${op}${value}`;
    }
    case 'mark':
      return `meta mark ${op}0x${checkInt(m.value, 0, 0xffff_ffff, `${where}: mark`, 'a mark').toString(16).padStart(8, '0')}`;
    case 'ctstate': {
      const states = nonEmpty(m.value, `${where}: ctstate`);
      for (const s of states)
        if (!CT_STATES.includes(s)) fail(`${where}: ctstate`, 'is not a conntrack state', s);
      return `ct state ${many([...states])}`;
    }
    case 'daddrType':
      if (!['local', 'broadcast', 'multicast'].includes(m.value))
        fail(`${where}: daddrType`, 'is not local, broadcast or multicast', m.value);
      return `fib daddr type ${op}${m.value}`;
    case 'nfproto':
      if (scope.family !== 'inet') fail(`${where}: nfproto`, 'is only meaningful in an inet table', m.value);
      if (m.value !== 'ipv4' && m.value !== 'ipv6') fail(`${where}: nfproto`, 'is not ipv4 or ipv6', m.value);
      return `meta nfproto ${m.value}`;
    default:
      return fail(where, 'is not a known match', (m as { match?: unknown }).match);
  }
}

function list<T>(value: T | readonly T[], where: Where): readonly T[] {
  return Array.isArray(value) ? nonEmpty(value as readonly T[], where) : [value as T];
}

function nonEmpty<T>(items: readonly T[], where: Where): readonly T[] {
  if (items.length === 0) fail(where, 'is an empty list', '[]');
  if (items.length > MAX_ELEMENTS) fail(where, `has more than ${MAX_ELEMENTS} items`, items.length);
  return items;
}

function renderStatement(s: NftStatement, chain: NftChain, scope: Scope, where: Where): string {
  const natOnly = (hooks: readonly NftHook[]): void => {
    if (chain.base?.type !== 'nat' || !hooks.includes(chain.base.hook))
      fail(where, `belongs in a nat chain on ${hooks.join(' or ')}`, s.do);
  };
  switch (s.do) {
    case 'counter':
      if (s.name === undefined) return 'counter';
      if (!scope.counters.has(checkName(s.name, `${where}: counter`)))
        fail(where, 'names no counter of this table', s.name);
      return `counter name ${s.name}`;
    case 'quota':
      if (!scope.quotas.has(checkName(s.name, `${where}: quota`)))
        fail(where, 'names no quota of this table', s.name);
      return `quota name ${s.name}`;
    case 'accept':
    case 'drop':
    case 'return':
      return s.do;
    case 'reject':
      return s.tcpReset ? 'reject with tcp reset' : 'reject';
    case 'jump':
    case 'goto': {
      const target = scope.chains.get(checkName(s.chain, `${where}: ${s.do}`));
      if (!target) fail(where, 'names no chain of this table', s.chain);
      if (target.base) fail(where, 'names a base chain (only regular chains can be jumped to)', s.chain);
      if (target === chain) fail(where, 'names its own chain', s.chain);
      return `${s.do} ${s.chain}`;
    }
    case 'masquerade':
      natOnly(['postrouting']);
      return 'masquerade';
    case 'snat': {
      natOnly(['postrouting', 'input']);
      const family = checkFamily(s.family, scope, `${where}: snat family`);
      return `snat ${family} to ${checkAddress(s.to, family, `${where}: snat to`)}`;
    }
    case 'snatPool': {
      natOnly(['postrouting', 'input']);
      const family = checkFamily(s.family, scope, `${where}: snatPool family`);
      const pool = nonEmpty(s.pool, `${where}: snatPool`);
      if (pool.length > MAX_POOL)
        fail(`${where}: snatPool`, `has more than ${MAX_POOL} addresses`, pool.length);
      const entries = pool.map((a, i) => `${i} : ${checkAddress(a, family, `${where}: snatPool`)}`);
      return `snat ${family} to jhash ${family} saddr mod ${pool.length} map { ${entries.join(', ')} }`;
    }
    case 'dnat': {
      natOnly(['prerouting', 'output']);
      const family = checkFamily(s.family, scope, `${where}: dnat family`);
      const address = checkAddress(s.to, family, `${where}: dnat to`);
      if (s.port === undefined) return `dnat ${family} to ${address}`;
      const port = checkPort(s.port, `${where}: dnat port`);
      return `dnat ${family} to ${family === 'ip6' ? `[${address}]` : address}:${port}`;
    }
    case 'redirect':
      natOnly(['prerouting', 'output']);
      return `redirect to :${checkPort(s.port, `${where}: redirect port`)}`;
    default:
      return fail(where, 'is not a known statement', (s as { do?: unknown }).do);
  }
}

const TERMINAL = new Set([
  'accept',
  'drop',
  'return',
  'reject',
  'jump',
  'goto',
  'masquerade',
  'snat',
  'snatPool',
  'dnat',
  'redirect',
]);

function renderRule(rule: NftRule, chain: NftChain, scope: Scope, where: Where): string {
  const parts = (rule.match ?? []).map((m, i) => renderMatch(m, scope, `${where}: match ${i + 1}`));
  if (rule.then.length === 0) fail(where, 'does nothing (no statement)', '[]');
  rule.then.forEach((s, i) => {
    if (TERMINAL.has(s.do) && i !== rule.then.length - 1)
      fail(`${where}: statement ${i + 1}`, 'ends the rule but is not last', s.do);
    parts.push(renderStatement(s, chain, scope, `${where}: statement ${i + 1}`));
  });
  if (rule.comment !== undefined) {
    if (typeof rule.comment !== 'string' || !COMMENT.test(rule.comment))
      fail(
        `${where}: comment`,
        'is not a comment (1-128 of A-Z a-z 0-9 space _ . : , @ / = + -)',
        rule.comment,
      );
    parts.push(`comment "${rule.comment}"`);
  }
  return parts.join(' ');
}

function renderBase(base: NonNullable<NftChain['base']>, where: Where): string {
  if (!['filter', 'nat', 'route'].includes(base.type)) fail(where, 'is not a chain type', base.type);
  if (!HOOKS.includes(base.hook)) fail(where, 'is not a hook', base.hook);
  if (base.type === 'nat' && base.hook === 'forward') fail(where, 'is not a hook of a nat chain', base.hook);
  if (base.type === 'route' && base.hook !== 'output')
    fail(where, 'is not a hook of a route chain', base.hook);
  if (base.type === 'nat' && base.policy === 'drop')
    fail(where, 'is not a policy of a nat chain', base.policy);
  const priority =
    typeof base.priority === 'number'
      ? String(checkInt(base.priority, -1_000, 1_000, `${where}: priority`, 'a priority'))
      : PRIORITIES.includes(base.priority)
        ? base.priority
        : fail(`${where}: priority`, 'is not a priority', base.priority);
  // nft 1.0 takes these two names only on the hook they are named for
  if (
    (priority === 'dstnat' && base.hook !== 'prerouting') ||
    (priority === 'srcnat' && base.hook !== 'postrouting')
  )
    fail(`${where}: priority`, `is not a priority name on hook ${base.hook} (use a number)`, priority);
  const policy = base.policy ?? 'accept';
  if (policy !== 'accept' && policy !== 'drop') fail(where, 'is not a policy', policy);
  return `type ${base.type} hook ${base.hook} priority ${priority}; policy ${policy};`;
}

function renderSet(set: NftSet, where: Where): string[] {
  const at = `${where}: set ${set.name}`;
  const elements = set.elements;
  if (elements.length > MAX_ELEMENTS) fail(at, `has more than ${MAX_ELEMENTS} elements`, elements.length);
  let interval = false;
  const rendered = elements.map((e) => {
    switch (set.type) {
      case 'ipv4_addr':
      case 'ipv6_addr': {
        const spec = checkAddressSpec(e, set.type === 'ipv4_addr' ? 'ip' : 'ip6', at);
        if (spec.includes('/') || spec.includes('-')) interval = true;
        return spec;
      }
      case 'inet_service':
        return String(checkPort(e, at));
      case 'ifname':
        return `"${checkIfname(e, at)}"`;
      case 'uid':
      case 'gid':
        return String(checkId(e, at));
      default:
        return fail(at, 'is not a set type', set.type);
    }
  });
  return [
    `\tset ${set.name} {`,
    `\t\ttype ${set.type}`,
    ...(interval ? ['\t\tflags interval'] : []),
    ...(rendered.length ? [`\t\telements = { ${rendered.join(', ')} }`] : []),
    '\t}',
  ];
}

/** A table's family and name, checked. */
export function checkTable(family: NftFamily, name: string): void {
  if (family !== 'ip' && family !== 'ip6' && family !== 'inet')
    fail('table family', 'is not ip, ip6 or inet', family);
  checkName(name, `table ${family}`);
}

/** `nft -f` text that removes the table if it exists (and does nothing otherwise). */
export function renderDeleteTable(family: NftFamily, name: string): string {
  checkTable(family, name);
  // `table` adds it when missing, so the delete never fails on an absent table
  return `table ${family} ${name}\ndelete table ${family} ${name}\n`;
}

/**
 * The `nft -f` text that replaces table `table.name` atomically with exactly this definition.
 * Throws `invalid_ruleset` (and renders nothing) on the first bad value.
 */
export function renderTable(table: NftTable): string {
  const head = renderDeleteTable(table.family, table.name);
  const where = `table ${table.family} ${table.name}`;
  const scope: Scope = {
    family: table.family,
    sets: new Map(),
    counters: new Set(),
    quotas: new Set(),
    chains: new Map(),
  };
  const taken = new Set<string>();
  const claim = (name: string, what: string): string => {
    checkName(name, `${where}: ${what}`);
    if (taken.has(name)) fail(`${where}: ${what}`, 'is defined twice', name);
    taken.add(name);
    return name;
  };
  for (const s of table.sets ?? []) scope.sets.set(claim(s.name, 'set'), s.type);
  for (const c of table.counters ?? []) scope.counters.add(claim(c, 'counter'));
  for (const q of table.quotas ?? []) scope.quotas.add(claim(q.name, 'quota'));
  for (const c of table.chains) scope.chains.set(claim(c.name, 'chain'), c);

  const lines = [`table ${table.family} ${table.name} {`];
  for (const s of table.sets ?? []) lines.push(...renderSet(s, where));
  for (const c of table.counters ?? []) lines.push(`\tcounter ${c} {`, '\t}');
  for (const q of table.quotas ?? []) {
    const bytes = checkInt(q.bytes, 1, Number.MAX_SAFE_INTEGER, `${where}: quota ${q.name}`, 'a byte count');
    lines.push(`\tquota ${q.name} {`, `\t\t${q.over ? 'over ' : ''}${bytes} bytes`, '\t}');
  }
  let rules = 0;
  for (const chain of table.chains) {
    const at = `${where}: chain ${chain.name}`;
    lines.push(`\tchain ${chain.name} {`);
    if (chain.base) lines.push(`\t\t${renderBase(chain.base, at)}`);
    chain.rules.forEach((rule, i) => {
      if (++rules > MAX_RULES) fail(where, `has more than ${MAX_RULES} rules`, rules);
      lines.push(`\t\t${renderRule(rule, chain, scope, `${at}: rule ${i + 1}`)}`);
    });
    lines.push('\t}');
  }
  lines.push('}');
  return `${head}${lines.join('\n')}\n`;
}
