import { isIPv4 } from 'node:net';
import { LOGIN_PASSWORD, LOGIN_PORTS, LOGIN_USERNAME, parseCidr, type LoginPort } from '../proxyAccess.js';
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
  /**
   * More logins besides `user` (src/proxyAccess.ts), each on the ports it names; only the ones
   * still valid (the data plane drops expired ones before rendering).
   */
  logins?: readonly { user: string; password: string; ports: readonly LoginPort[] }[] | undefined;
  /** Client networks (CIDR, IPv4 or IPv6) that need no password. */
  allowlist?: readonly string[] | undefined;
  /**
   * 3proxy's own speed limits (`bandlimin`/`bandlimout`), kbit/s, shared by every client of the
   * modem: only where the kernel does not shape the modem's link (no link of its own, as in the demo).
   */
  bandwidth?: { downloadKbps: number | null; uploadKbps: number | null } | undefined;
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
  const names = new Set([s.user]);
  (s.logins ?? []).forEach((l, i) => {
    if (!LOGIN_USERNAME.test(l.user)) problems.push(`logins[${i}].user: 3-32 of a-z, 0-9, _ and -`);
    else if (names.has(l.user)) problems.push(`logins[${i}].user: used twice`);
    names.add(l.user);
    if (!LOGIN_PASSWORD.test(l.password))
      problems.push(`logins[${i}].password: 12-64 of A-Z, a-z, 0-9, _ and -`);
    if (l.ports.length === 0 || !l.ports.every((p) => (LOGIN_PORTS as readonly string[]).includes(p)))
      problems.push(`logins[${i}].ports: http and/or socks`);
  });
  (s.allowlist ?? []).forEach((c, i) => {
    const parsed = parseCidr(c);
    if ('problem' in parsed || parsed.cidr !== c) problems.push(`allowlist[${i}]: not a canonical CIDR`);
  });
  for (const [name, kbps] of [
    ['downloadKbps', s.bandwidth?.downloadKbps],
    ['uploadKbps', s.bandwidth?.uploadKbps],
  ] as const)
    if (kbps !== undefined && kbps !== null && (!Number.isInteger(kbps) || kbps < 1 || kbps > 10_000_000))
      problems.push(`bandwidth.${name}: kbit/s, 1-10000000`);
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

/** The logins of one port: the modem's own, then the others that name it. */
function usersOf(s: ProxySpec, port: LoginPort): string[] {
  return [s.user, ...(s.logins ?? []).filter((l) => l.ports.includes(port)).map((l) => l.user)];
}

/**
 * A 3proxy configuration for one modem (one process per modem, in the foreground). With an
 * allowlist, `auth iponly strong`: a client from a listed network passes the ACL without a username
 * (`iponly`), every other one needs a login (`strong`). When the HTTP and SOCKS ports have different
 * logins, each service gets its own ACL (`flush` between them).
 */
export function render3proxy(s: ProxySpec): string {
  assertSpec(s);
  const http = usersOf(s, 'http');
  const socks = usersOf(s, 'socks');
  const same = http.join(',') === socks.join(',');
  const clients = s.allowlist ?? [];
  const bits = (kbps: number | null | undefined): number | null =>
    kbps === undefined || kbps === null ? null : kbps * 1000;
  const down = bits(s.bandwidth?.downloadKbps);
  const up = bits(s.bandwidth?.uploadKbps);
  return [
    `# modemfleet: proxy of modem ${s.imei} (generated; edits are overwritten)`,
    ...s.dns.map((d) => `nserver ${d}`),
    'nscache 65536',
    ...(s.logFile ? [`log ${s.logFile} D`, 'rotate 7'] : []),
    'timeouts 1 5 30 60 180 1800 15 60',
    clients.length ? 'auth iponly strong' : 'auth strong',
    `users ${s.user}:CL:${s.password}`,
    ...(s.logins ?? []).map((l) => `users ${l.user}:CL:${l.password}`),
    // incoming: from the internet to the customer (download); one channel shared by all clients
    ...(down !== null ? [`bandlimin ${down} *`] : []),
    ...(up !== null ? [`bandlimout ${up} *`] : []),
    ...acl(s, http, clients),
    `proxy -p${s.httpPort} -i${s.listen} -e${s.egress}`,
    ...(same ? [] : ['flush', ...acl(s, socks, clients)]),
    `socks -p${s.socksPort} -i${s.listen} -e${s.egress}`,
    '',
  ].join('\n');
}

/**
 * 3proxy ACL lines (first match wins): the egress allowlist, the refused blocks, then the logins
 * and the client networks that need none.
 */
function acl(s: ProxySpec, users: readonly string[], clients: readonly string[]): string[] {
  const who = users.join(',');
  const sources = clients.join(',');
  const policy = s.egressPolicy;
  const anyone = clients.length ? [`allow ${who}`, `allow * ${sources}`] : [`allow ${who}`];
  if (!policy) return anyone;
  const list = (items: readonly string[]): string => items.join(',');
  const allow = [...minimalPrefixes(policy.allow, 'ip'), ...minimalPrefixes(policy.allow, 'ip6')];
  const deny4 = minimalPrefixes([...DEFAULT_DENY_V4, ...policy.deny], 'ip');
  const deny6 = minimalPrefixes([...DEFAULT_DENY_V6, ...policy.deny], 'ip6');
  return [
    ...(allow.length ? [`allow ${who} * ${list(allow)}`] : []),
    ...(allow.length && clients.length ? [`allow * ${sources} ${list(allow)}`] : []),
    `deny * * ${list(deny4)}`,
    `deny * * ${list(deny6)}`,
    ...(policy.internet === false ? ['deny *'] : anyone),
  ];
}

/**
 * A tinyproxy configuration (HTTP only) bound to the modem's address: one `BasicAuth` line per
 * login of the HTTP port (tinyproxy 1.11 accepts several and re-reads them on SIGUSR1). LogLevel
 * Notice: its "Reloading config file finished" on stdout tells the data plane a reload took effect.
 */
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
    ...(s.logins ?? [])
      .filter((l) => l.ports.includes('http'))
      .map((l) => `BasicAuth ${l.user} ${l.password}`),
    'LogLevel Notice',
    'DisableViaHeader Yes',
    '',
  ].join('\n');
}

/**
 * The password-less tinyproxy of an allowlist (microsocks and tinyproxy cannot exempt a client
 * network from their login): on its own port, reached only through the kernel's redirect of the
 * listed networks (src/net/accessList.ts), and refusing every other client itself (`Allow`).
 */
export function renderOpenTinyproxy(s: ProxySpec, port: number): string {
  assertSpec(s);
  checkOpenPort(s, port);
  const clients = s.allowlist ?? [];
  if (clients.length === 0)
    throw new ModemfleetError('invalid_proxy_config', `proxy of ${s.imei}: an open port needs an allowlist`);
  return [
    `# modemfleet: password-less HTTP proxy of modem ${s.imei} for its allowlist (generated; edits are overwritten)`,
    `Port ${port}`,
    `Listen ${s.listen}`,
    `Bind ${s.egress}`,
    'Timeout 600',
    'MaxClients 200',
    ...clients.map((c) => `Allow ${c}`),
    'LogLevel Notice',
    'DisableViaHeader Yes',
    '',
  ].join('\n');
}

function checkOpenPort(s: ProxySpec, port: number): void {
  if (!Number.isInteger(port) || port < 1 || port > 65535 || port === s.httpPort || port === s.socksPort)
    throw new ModemfleetError(
      'invalid_proxy_config',
      `proxy of ${s.imei}: open port ${port} is not a free port number`,
    );
}

/** microsocks (SOCKS5 only) arguments: bound to the modem's address, with user and password. */
export function microsocksArgs(s: ProxySpec): string[] {
  assertSpec(s);
  return ['-i', s.listen, '-p', String(s.socksPort), '-b', s.egress, '-u', s.user, '-P', s.password];
}

/**
 * The password-less microsocks of an allowlist: no login, on its own port, which only the kernel's
 * redirect of the listed networks reaches (microsocks has no client filter of its own).
 */
export function openMicrosocksArgs(s: ProxySpec, port: number): string[] {
  assertSpec(s);
  checkOpenPort(s, port);
  return ['-i', s.listen, '-p', String(port), '-b', s.egress];
}
