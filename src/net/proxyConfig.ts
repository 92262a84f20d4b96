import { isIPv4 } from 'node:net';
import { ModemfleetError } from '../util/errors.js';
import { DEFAULT_DENY_V4, DEFAULT_DENY_V6, checkPrefixes, minimalPrefixes } from './egressPolicy.js';

/**
 * What one modem's proxy serves: its ports (from the allocation), its credentials, the address its
 * outgoing connections use (the modem's WAN address) and where it listens. Every field is checked
 * before it reaches a config file or an argument list: strings that come from modems or the
 * database never do unchecked.
 */
export interface ProxySpec {
  imei: string;
  listen: string;
  httpPort: number;
  socksPort: number;
  user: string;
  password: string;
  /** The modem's WAN address: every outgoing connection is bound to it. */
  egress: string;
  /** Resolvers for 3proxy's own DNS (`nserver`); empty: the system's. */
  dns: string[];
  /** 3proxy's log file. */
  logFile?: string | undefined;
  /**
   * 3proxy's own second wall behind the kernel's egress policy (src/net/egressPolicy.ts): these
   * destinations are allowed first, then the special-purpose blocks and `deny` are refused, then
   * (unless `internet` is false) the rest is allowed. Addresses or prefixes, IPv4 or IPv6.
   */
  egressPolicy?: { allow: readonly string[]; deny: readonly string[]; internet?: boolean } | undefined;
}

const TOKEN = /^[A-Za-z0-9_-]{1,64}$/;
const PATH = /^\/[A-Za-z0-9_./-]{1,255}$/;

export function checkProxySpec(s: ProxySpec): string[] {
  const problems: string[] = [];
  if (!/^\d{15}$/.test(s.imei)) problems.push('imei: 15 digits');
  if (!isIPv4(s.listen)) problems.push('listen: not an IPv4 address');
  if (!isIPv4(s.egress)) problems.push('egress: not an IPv4 address');
  for (const [name, port] of [
    ['httpPort', s.httpPort],
    ['socksPort', s.socksPort],
  ] as const)
    if (!Number.isInteger(port) || port < 1 || port > 65535) problems.push(`${name}: must be 1-65535`);
  if (s.httpPort === s.socksPort) problems.push('socksPort: must differ from httpPort');
  if (!TOKEN.test(s.user)) problems.push('user: letters, digits, _ and -, at most 64');
  if (!TOKEN.test(s.password)) problems.push('password: letters, digits, _ and -, at most 64');
  if (s.dns.length > 4 || !s.dns.every((d) => isIPv4(d))) problems.push('dns: at most 4 IPv4 addresses');
  if (s.logFile !== undefined && !PATH.test(s.logFile))
    problems.push('logFile: an absolute path without spaces');
  if (s.egressPolicy) {
    problems.push(...checkPrefixes(s.egressPolicy.allow, 'egressPolicy.allow'));
    problems.push(...checkPrefixes(s.egressPolicy.deny, 'egressPolicy.deny'));
  }
  return problems;
}

function assertSpec(s: ProxySpec): void {
  const problems = checkProxySpec(s);
  if (problems.length)
    throw new ModemfleetError(
      'invalid_proxy_config',
      `proxy of ${s.imei.slice(0, 15)}: ${problems.join('; ')}`,
    );
}

/** A 3proxy configuration for one modem (one process per modem, in the foreground). */
export function render3proxy(s: ProxySpec): string {
  assertSpec(s);
  return [
    `# modemfleet: proxy of modem ${s.imei} (generated; edits are overwritten)`,
    ...s.dns.map((d) => `nserver ${d}`),
    'nscache 65536',
    ...(s.logFile ? [`log ${s.logFile} D`, 'rotate 7'] : []),
    'timeouts 1 5 30 60 180 1800 15 60',
    'auth strong',
    `users ${s.user}:CL:${s.password}`,
    ...acl(s),
    `proxy -p${s.httpPort} -i${s.listen} -e${s.egress}`,
    `socks -p${s.socksPort} -i${s.listen} -e${s.egress}`,
    '',
  ].join('\n');
}

/** 3proxy ACL lines (first match wins): the allowlist, the refused blocks, then the user. */
function acl(s: ProxySpec): string[] {
  const policy = s.egressPolicy;
  if (!policy) return [`allow ${s.user}`];
  const list = (items: readonly string[]): string => items.join(',');
  const allow = [...minimalPrefixes(policy.allow, 'ip'), ...minimalPrefixes(policy.allow, 'ip6')];
  const deny4 = minimalPrefixes([...DEFAULT_DENY_V4, ...policy.deny], 'ip');
  const deny6 = minimalPrefixes([...DEFAULT_DENY_V6, ...policy.deny], 'ip6');
  return [
    ...(allow.length ? [`allow ${s.user} * ${list(allow)}`] : []),
    `deny * * ${list(deny4)}`,
    `deny * * ${list(deny6)}`,
    policy.internet === false ? 'deny *' : `allow ${s.user}`,
  ];
}

/** A tinyproxy configuration (HTTP only) bound to the modem's address. */
export function renderTinyproxy(s: ProxySpec): string {
  assertSpec(s);
  return [
    `# modemfleet: HTTP proxy of modem ${s.imei} (generated; edits are overwritten)`,
    `Port ${s.httpPort}`,
    `Listen ${s.listen}`,
    `Bind ${s.egress}`,
    'Timeout 600',
    'MaxClients 200',
    `BasicAuth ${s.user} ${s.password}`,
    'LogLevel Warning',
    'DisableViaHeader Yes',
    '',
  ].join('\n');
}

/** microsocks (SOCKS5 only) arguments: bound to the modem's address, with user and password. */
export function microsocksArgs(s: ProxySpec): string[] {
  assertSpec(s);
  return ['-i', s.listen, '-p', String(s.socksPort), '-b', s.egress, '-u', s.user, '-P', s.password];
}
