import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { DEFAULT_RANGES, checkRanges, slotCount, type AllocationRanges } from './allocationRanges.js';
import { checkPrefixes } from './net/egressPolicy.js';
import { POWER_PLACEHOLDERS, unknownPlaceholders } from './fleet/power.js';
import { scheduleProblems, type NoReuse, type RotationSchedule } from './fleet/rotationSchedule.js';
import { HOST_ID_PATTERN } from './ids.js';
import { ALLOWED_HOST_PATTERN } from './inspector/hostAllowlist.js';
import { parseWebhook, type WebhookSpec } from './alerts/webhookSpec.js';
import { ConfigError } from './util/errors.js';
import { DEFAULT_POLICY, DEFAULT_SPOOL_MAX_BYTES, type Policy } from './policy.js';

export { DEFAULT_POLICY, type Policy };
import { DEFAULT_MODEM_CONFIG, type ModemConfig } from '../machines/modemTypes.js';

/**
 * The one configuration module: environment and an optional JSON file are parsed once, validated,
 * and every problem is reported as `path: message`. Limits and timeouts live in `policy`.
 */
export interface Config {
  stateDir: string;
  databaseUrl: string | undefined;
  /**
   * A direct (session) connection for LISTEN when `databaseUrl` goes through a transaction-mode
   * pooler (PgBouncer); the pool then also goes without named prepared statements. Unset: LISTEN
   * uses `databaseUrl`.
   */
  databaseListenUrl: string | undefined;
  embeddedPort: number;
  hostId: string;
  apiToken: string | undefined;
  threeProxyPath: string | undefined;
  allocation: AllocationRanges;
  policy: Policy;
  /** Where modems are found: /sys and /dev in production, a fake tree in the lab. */
  scan: { sysRoot: string; devRoot: string };
  /** Hotplug events: `udev` (udevadm monitor), `watch` (a watch on the fake sysfs tree), `none`. */
  hotplug: 'udev' | 'watch' | 'none';
  /** The APN, in place before the modem attaches; unset keeps the modem's own. */
  apn: string | undefined;
  /** APNs by operator: MCC+MNC of the SIM (5 or 6 digits, e.g. "26202") → APN; `apn` is the default. */
  apnByOperator: Record<string, string>;
  /** A modem found in another `AT+QCFG="usbnet"` mode is switched to QMI and reset (default: error). */
  switchUsbnet: boolean;
  /** MTU put on a modem's link when the modem reports none (default 1500). */
  mtu: number;
  /**
   * argv template of a USB power-cycle command (the last rung of the recovery ladder), e.g.
   * uhubctl; elements may use `{hub}`, `{port}`, `{usbPath}`, `{imei}` (see src/fleet/power.ts).
   */
  powerCycleCommand: string[] | undefined;
  /** Timings and limits of every modem machine (see ModemConfig). */
  modem: Partial<ModemConfig>;
  /** Journal spool: fsync after every append (`always`) or never; size bound in bytes. */
  spoolFsync: 'always' | 'never';
  spoolMaxBytes: number;
  /** Routing and proxies per modem; unset: modems are supervised without a data plane. */
  dataPlane: DataPlaneConfig | undefined;
  /** Where the inspector (API, WebSocket, web page) listens; undefined: not served. */
  http: { host: string; port: number } | undefined;
  /**
   * Host header values the inspector serves beyond loopback and its listen addresses (names,
   * addresses, `*.domain`, or `*` for any): a request with another Host gets 421 (DNS rebinding).
   */
  allowedHosts: string[];
  /** The address clients reach this host's proxy ports at (the API's proxy.host). */
  proxyHost: string | undefined;
  /**
   * Rotation: `schedule` is the farm default for modems without their own schedule (unset: none);
   * `noReuse`: a public address seen within `hours` (on the modem, or anywhere on the farm) does
   * not count as new (unset: only the address right before counts as the same).
   */
  rotation: { schedule: RotationSchedule | undefined; noReuse: NoReuse | undefined };
  /**
   * Push alerts defined in the file, kept in the `webhooks` table at start by name (the farm's
   * config webhooks: ones no longer listed are removed); undefined (no key): the table is left alone.
   */
  webhooks: WebhookSpec[] | undefined;
}

export interface DataPlaneConfig {
  netns: string | undefined;
  /** `auto`: 3proxy when MODEMFLEET_3PROXY or PATH has it, else microsocks+tinyproxy. */
  backend: 'auto' | '3proxy' | 'microsocks+tinyproxy';
  listen: string;
  prefix: number;
  runDir: string;
  dns: string[];
  rulePriorityBase: number;
  /**
   * The proxies of slot n run as uid/gid base + n with no capabilities (default 61000; the range
   * base .. base + slots - 1 is reserved for them): their uidrange rule routes their own traffic
   * (DNS) into the modem's table and the egress policy matches them. null (undefined here): off.
   */
  proxyUidBase: number | undefined;
  /**
   * What the proxies may reach, enforced by the kernel per uid (src/net/egressPolicy.ts): the
   * internet through their own modem; `allow` (addresses or prefixes, IPv4 or IPv6) is reached
   * before any refusal; `deny` is refused besides the special-purpose blocks. null: off.
   */
  egressPolicy: { allow: string[]; deny: string[] } | null;
  /** Echo endpoints (the first that answers counts), check interval, readings per public address. */
  egress: { urls: string[]; intervalMs: number; samples: number } | undefined;
  /**
   * The modems' net interfaces are qmi_wwan links (default): raw-IP, link state and MTU are set
   * through sysfs before each call. `false` only for labs whose links are not qmi_wwan (veth pairs).
   */
  qmiLinks: boolean;
  /**
   * Bytes through each modem's ports counted by the kernel, sampled into PostgreSQL, and quotas and
   * expiry enforced (nftables table `inet mf_traffic`; default true).
   */
  trafficAccounting: boolean;
  /**
   * Where the password-less companions of an allowlist listen on microsocks+tinyproxy: each modem's
   * HTTP and SOCKS port plus this offset (default 2000); the shifted ranges must not meet the port
   * ranges (src/net/accessList.ts).
   */
  openPortOffset: number;
}

export type ConfigMode = 'production' | 'demo';

/** Port of the embedded PostgreSQL on 127.0.0.1 (MODEMFLEET_PG_PORT). */
export const DEFAULT_EMBEDDED_PORT = 54329;

const FILE_KEYS = [
  'stateDir',
  'databaseUrl',
  'databaseListenUrl',
  'embeddedPort',
  'hostId',
  'threeProxyPath',
  'allocation',
  'policy',
  'scan',
  'hotplug',
  'apn',
  'apnByOperator',
  'switchUsbnet',
  'mtu',
  'powerCycleCommand',
  'modem',
  'spoolFsync',
  'spoolMaxBytes',
  'dataPlane',
  'http',
  'allowedHosts',
  'proxyHost',
  'rotation',
  'webhooks',
] as const;

const APN = /^[A-Za-z0-9][A-Za-z0-9.-]{0,61}$/;

/** `{ "26202": "web.vodafone.de", ... }`: MCC+MNC (5 or 6 digits) → APN. */
function apnMap(value: unknown, problems: string[]): Record<string, string> {
  if (value === undefined) return {};
  if (!isRecord(value)) {
    problems.push('apnByOperator: must be an object of MCC+MNC → APN, e.g. {"26202": "web.vodafone.de"}');
    return {};
  }
  const out: Record<string, string> = {};
  for (const [key, apn] of Object.entries(value)) {
    if (!/^\d{5,6}$/.test(key))
      problems.push(`apnByOperator.${key.slice(0, 32)}: the key must be MCC+MNC, 5 or 6 digits`);
    else if (typeof apn !== 'string' || !APN.test(apn))
      problems.push(`apnByOperator.${key}: letters, digits, dots and dashes, at most 62`);
    else out[key] = apn;
  }
  return out;
}

function defaultHostId(): string {
  const name = hostname()
    .replace(/[^A-Za-z0-9._-]/g, '-')
    .replace(/^[^A-Za-z0-9]+/, '');
  return name.slice(0, 63) || 'localhost';
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function readFile(path: string, problems: string[]): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    problems.push(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    return {};
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    problems.push(`${path}: not valid JSON (${(err as Error).message})`);
    return {};
  }
  if (!isRecord(parsed)) {
    problems.push(`${path}: must be a JSON object`);
    return {};
  }
  for (const key of Object.keys(parsed)) {
    if (!(FILE_KEYS as readonly string[]).includes(key)) problems.push(`${key}: unknown setting`);
  }
  return parsed;
}

function int(value: unknown, path: string, problems: string[], min: number, max: number): number | undefined {
  if (value === undefined) return undefined;
  const n = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < min || n > max) {
    problems.push(`${path}: must be an integer from ${min} to ${max}`);
    return undefined;
  }
  return n;
}

function str(value: unknown, path: string, problems: string[]): string | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') {
    problems.push(`${path}: must be a string`);
    return undefined;
  }
  return value;
}

function ranges(value: unknown, problems: string[]): AllocationRanges {
  if (value === undefined) return DEFAULT_RANGES;
  if (!isRecord(value)) {
    problems.push('allocation: must be an object');
    return DEFAULT_RANGES;
  }
  const out = { ...DEFAULT_RANGES };
  for (const key of Object.keys(value)) {
    if (!(key in DEFAULT_RANGES)) {
      problems.push(`allocation.${key}: unknown range`);
      continue;
    }
    const r = value[key];
    const name = key as keyof AllocationRanges;
    if (!isRecord(r) || typeof r['from'] !== 'number' || typeof r['to'] !== 'number') {
      problems.push(`allocation.${key}: must be { "from": number, "to": number }`);
      continue;
    }
    out[name] = { from: r['from'], to: r['to'] };
  }
  problems.push(...checkRanges(out));
  return out;
}

function policy(value: unknown, problems: string[]): Policy {
  if (value === undefined) return DEFAULT_POLICY;
  if (!isRecord(value)) {
    problems.push('policy: must be an object');
    return DEFAULT_POLICY;
  }
  const out: Policy = { ...DEFAULT_POLICY };
  for (const [key, v] of Object.entries(value)) {
    if (!(key in DEFAULT_POLICY)) {
      problems.push(`policy.${key}: unknown setting`);
      continue;
    }
    const n = int(v, `policy.${key}`, problems, 1, 2_147_483_647);
    if (n !== undefined) out[key as keyof Policy] = n;
  }
  // a live host must never look dead between two heartbeats
  if (out.hostDeadAfterMs < 3 * out.hostHeartbeatMs)
    problems.push(
      `policy.hostDeadAfterMs: must be at least 3 × policy.hostHeartbeatMs (${3 * out.hostHeartbeatMs})`,
    );
  return out;
}

function scan(value: unknown, problems: string[]): Config['scan'] {
  const out = { sysRoot: '/sys', devRoot: '/dev' };
  if (value === undefined) return out;
  if (!isRecord(value)) {
    problems.push('scan: must be { "sysRoot": path, "devRoot": path }');
    return out;
  }
  for (const [key, v] of Object.entries(value)) {
    if (key !== 'sysRoot' && key !== 'devRoot') problems.push(`scan.${key}: unknown setting`);
    else if (typeof v !== 'string' || !v.startsWith('/'))
      problems.push(`scan.${key}: must be an absolute path`);
    else out[key] = v;
  }
  return out;
}

function modem(value: unknown, problems: string[]): Partial<ModemConfig> {
  if (value === undefined) return {};
  if (!isRecord(value)) {
    problems.push('modem: must be an object');
    return {};
  }
  const out: Partial<ModemConfig> = {};
  for (const [key, v] of Object.entries(value)) {
    if (!(key in DEFAULT_MODEM_CONFIG)) {
      problems.push(`modem.${key}: unknown setting`);
      continue;
    }
    if (key === 'powerCycle' || key === 'usbReset') {
      if (typeof v !== 'boolean') problems.push(`modem.${key}: must be true or false`);
      else out[key] = v;
      continue;
    }
    const n = int(v, `modem.${key}`, problems, 0, 86_400_000);
    if (n !== undefined) (out as Record<string, number>)[key] = n;
  }
  return out;
}

/** An echo endpoint: plain HTTP to an IPv4 address (no DNS lookup that could leave another way). */
const ECHO_URL = /^http:\/\/[0-9.]+(:\d+)?\/[\x21-\x7e]{0,200}$/;

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;

function dataPlane(value: unknown, stateDir: string, problems: string[]): DataPlaneConfig | undefined {
  if (value === undefined) return undefined;
  if (!isRecord(value)) {
    problems.push('dataPlane: must be an object');
    return undefined;
  }
  const known = [
    'netns',
    'backend',
    'listen',
    'prefix',
    'runDir',
    'dns',
    'rulePriorityBase',
    'proxyUidBase',
    'egress',
    'egressPolicy',
    'qmiLinks',
    'trafficAccounting',
    'openPortOffset',
  ];
  for (const key of Object.keys(value))
    if (!known.includes(key)) problems.push(`dataPlane.${key}: unknown setting`);
  const out: DataPlaneConfig = {
    netns: str(value['netns'], 'dataPlane.netns', problems),
    backend: 'auto',
    listen: str(value['listen'], 'dataPlane.listen', problems) ?? '0.0.0.0',
    prefix: int(value['prefix'], 'dataPlane.prefix', problems, 8, 32) ?? 32,
    runDir: str(value['runDir'], 'dataPlane.runDir', problems) ?? resolve(stateDir, 'run'),
    dns: [],
    rulePriorityBase:
      int(value['rulePriorityBase'], 'dataPlane.rulePriorityBase', problems, 1, 30_000) ?? 1_000,
    // null turns per-proxy uids (and with them the egress policy) off; on by default, root or not
    proxyUidBase:
      value['proxyUidBase'] === null
        ? undefined
        : (int(value['proxyUidBase'], 'dataPlane.proxyUidBase', problems, 1_000, 2_000_000_000) ?? 61_000),
    egress: undefined,
    egressPolicy: { allow: [], deny: [] },
    qmiLinks: true,
    trafficAccounting: true,
    openPortOffset: int(value['openPortOffset'], 'dataPlane.openPortOffset', problems, 1, 64_000) ?? 2_000,
  };
  const accounting = value['trafficAccounting'];
  if (typeof accounting === 'boolean') out.trafficAccounting = accounting;
  else if (accounting !== undefined) problems.push('dataPlane.trafficAccounting: must be true or false');
  const qmiLinks = value['qmiLinks'];
  if (typeof qmiLinks === 'boolean') out.qmiLinks = qmiLinks;
  else if (qmiLinks !== undefined) problems.push('dataPlane.qmiLinks: must be true or false');
  if (out.netns !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(out.netns))
    problems.push('dataPlane.netns: a network namespace name');
  if (!IPV4.test(out.listen)) problems.push('dataPlane.listen: an IPv4 address');
  const backend = value['backend'];
  if (backend === 'auto' || backend === '3proxy' || backend === 'microsocks+tinyproxy') out.backend = backend;
  else if (backend !== undefined)
    problems.push('dataPlane.backend: "auto", "3proxy" or "microsocks+tinyproxy"');
  const dns = value['dns'];
  if (dns !== undefined) {
    if (
      !Array.isArray(dns) ||
      dns.length > 4 ||
      !dns.every((d): d is string => typeof d === 'string' && IPV4.test(d))
    )
      problems.push('dataPlane.dns: at most 4 IPv4 addresses');
    else out.dns = dns;
  }
  const policy = value['egressPolicy'];
  if (policy === null) out.egressPolicy = null;
  else if (policy !== undefined) {
    if (!isRecord(policy))
      problems.push('dataPlane.egressPolicy: must be an object { "allow": [...], "deny": [...] } or null');
    else {
      for (const key of Object.keys(policy))
        if (key !== 'allow' && key !== 'deny')
          problems.push(`dataPlane.egressPolicy.${key}: unknown setting`);
      const lists = { allow: policy['allow'] ?? [], deny: policy['deny'] ?? [] };
      const found = [
        ...checkPrefixes(lists.allow, 'dataPlane.egressPolicy.allow'),
        ...checkPrefixes(lists.deny, 'dataPlane.egressPolicy.deny'),
      ];
      problems.push(...found);
      if (!found.length) out.egressPolicy = { allow: lists.allow as string[], deny: lists.deny as string[] };
    }
  }
  if (out.egressPolicy && out.proxyUidBase === undefined)
    problems.push(
      'dataPlane.egressPolicy: needs proxyUidBase (the policy matches the proxies by uid); set "egressPolicy": null to run without it',
    );
  const egress = value['egress'];
  if (egress !== undefined) {
    const urls: unknown[] = isRecord(egress)
      ? [
          ...(Array.isArray(egress['urls']) ? (egress['urls'] as unknown[]) : []),
          ...(egress['url'] !== undefined ? [egress['url']] : []),
        ]
      : [];
    if (
      !isRecord(egress) ||
      urls.length === 0 ||
      urls.length > 8 ||
      !urls.every((u): u is string => typeof u === 'string' && ECHO_URL.test(u)) ||
      (egress['urls'] !== undefined && !Array.isArray(egress['urls']))
    )
      problems.push(
        'dataPlane.egress: { "urls": ["http://IPV4[:PORT]/...", ...] (1-8 echo endpoints), "intervalMs": number, "samples": number }',
      );
    else
      out.egress = {
        urls,
        intervalMs:
          int(egress['intervalMs'], 'dataPlane.egress.intervalMs', problems, 500, 86_400_000) ?? 60_000,
        samples: int(egress['samples'], 'dataPlane.egress.samples', problems, 1, 10) ?? 2,
      };
  }
  return out;
}

/** `webhooks`: an array of webhook definitions; a `json` one needs its `secret` here (to verify). */
function webhooks(value: unknown, problems: string[]): WebhookSpec[] | undefined {
  if (value === undefined) return undefined;
  if (!Array.isArray(value) || value.length > 32) {
    problems.push('webhooks: must be an array of at most 32 webhooks');
    return [];
  }
  const out: WebhookSpec[] = [];
  value.forEach((item: unknown, i) => {
    const at = `webhooks[${i}]`;
    const spec = parseWebhook(item, at, problems);
    if (!spec) return;
    if ((item as Record<string, unknown>)['secret'] === undefined && spec.format === 'json')
      problems.push(`${at}.secret: required for format "json" (the receiver checks the signature with it)`);
    else if (out.some((w) => w.name === spec.name)) problems.push(`${at}.name: '${spec.name}' is used twice`);
    else out.push(spec);
  });
  return out;
}

/** `HOST:PORT` (IPv4, a name, or [IPv6]); null or "off" turns the inspector off. */
export function parseListen(
  value: unknown,
  path: string,
  problems: string[],
): { host: string; port: number } | undefined | null {
  if (value === undefined) return undefined;
  if (value === null || value === 'off') return null;
  const match =
    typeof value === 'string'
      ? /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]{1,253})):(\d{1,5})$/.exec(value)
      : null;
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) {
    problems.push(`${path}: must be HOST:PORT (e.g. 127.0.0.1:8080), or "off"`);
    return undefined;
  }
  return { host: match[1] ?? match[2] ?? '', port };
}

function argv(value: unknown, path: string, problems: string[]): string[] | undefined {
  if (value === undefined) return undefined;
  if (
    !Array.isArray(value) ||
    value.length === 0 ||
    !value.every((a): a is string => typeof a === 'string' && a.length > 0 && a.length < 4096)
  ) {
    problems.push(`${path}: must be a non-empty array of strings (program and arguments; no shell)`);
    return undefined;
  }
  return value;
}

/** `allowedHosts`: names or addresses for the inspector's Host check (env: comma-separated). */
function allowedHosts(
  value: unknown,
  path: string,
  problems: string[],
  fromEnv = false,
): string[] | undefined {
  if (value === undefined) return undefined;
  const list =
    fromEnv && typeof value === 'string'
      ? value
          .split(',')
          .map((h) => h.trim())
          .filter(Boolean)
      : value;
  if (
    !Array.isArray(list) ||
    list.length > 64 ||
    !list.every((h): h is string => typeof h === 'string' && ALLOWED_HOST_PATTERN.test(h))
  ) {
    problems.push(
      `${path}: at most 64 host names or addresses (e.g. ["farm.example.com", "*.farm.lan", "10.0.0.5"], or "*" for any)`,
    );
    return undefined;
  }
  return list;
}

const ROTATION_SHAPE =
  'rotation: must be { "schedule": { "intervalSeconds", "jitterSeconds" }, "noReuseHours": number, "noReuseScope": "modem" | "farm" }';

/**
 * `rotation`: `{ "schedule": { "intervalSeconds", "jitterSeconds" }, "noReuseHours", "noReuseScope" }`;
 * the schedule is checked against the policy's floor, `noReuseHours` from 1 to 720 (30 days).
 */
function rotation(value: unknown, floorSeconds: number, problems: string[]): Config['rotation'] {
  const none: Config['rotation'] = { schedule: undefined, noReuse: undefined };
  if (value === undefined) return none;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    problems.push(ROTATION_SHAPE);
    return none;
  }
  const known = ['schedule', 'noReuseHours', 'noReuseScope'];
  for (const key of Object.keys(value))
    if (!known.includes(key)) problems.push(`rotation.${key.slice(0, 32)}: unknown setting`);
  const { schedule, noReuseHours, noReuseScope = 'modem' } = value as Record<string, unknown>;
  const out = { ...none };
  if (schedule !== undefined) {
    const found = scheduleProblems(schedule, floorSeconds, 'rotation.schedule');
    problems.push(...found);
    if (!found.length) {
      const { intervalSeconds, jitterSeconds = 0 } = schedule as {
        intervalSeconds: number;
        jitterSeconds?: number;
      };
      out.schedule = { intervalSeconds, jitterSeconds };
    }
  }
  if (noReuseScope !== 'modem' && noReuseScope !== 'farm')
    problems.push('rotation.noReuseScope: must be "modem" or "farm"');
  if (noReuseHours !== undefined) {
    if (
      typeof noReuseHours !== 'number' ||
      !Number.isSafeInteger(noReuseHours) ||
      noReuseHours < 1 ||
      noReuseHours > 720
    )
      problems.push('rotation.noReuseHours: must be a whole number of hours from 1 to 720');
    else if (noReuseScope === 'modem' || noReuseScope === 'farm')
      out.noReuse = { hours: noReuseHours, scope: noReuseScope };
  } else if ((value as Record<string, unknown>)['noReuseScope'] !== undefined)
    problems.push('rotation.noReuseScope: needs rotation.noReuseHours');
  return out;
}

/** Parse and validate. Environment wins over the file. Throws ConfigError listing every problem. */
export function loadConfig(
  options: { env?: NodeJS.ProcessEnv; file?: string; mode?: ConfigMode } = {},
): Config {
  const env = options.env ?? process.env;
  const problems: string[] = [];
  const file = options.file ? readFile(options.file, problems) : {};

  const stateDir =
    str(env['MODEMFLEET_STATE_DIR'], 'MODEMFLEET_STATE_DIR', problems) ??
    str(file['stateDir'], 'stateDir', problems) ??
    (options.mode === 'demo' ? './var' : '/var/lib/modemfleet');
  const databaseUrl =
    str(env['DATABASE_URL'], 'DATABASE_URL', problems) ?? str(file['databaseUrl'], 'databaseUrl', problems);
  const databaseListenUrl =
    str(env['DATABASE_LISTEN_URL'], 'DATABASE_LISTEN_URL', problems) ??
    str(file['databaseListenUrl'], 'databaseListenUrl', problems);
  if (databaseListenUrl !== undefined && databaseUrl === undefined)
    problems.push('databaseListenUrl: goes with DATABASE_URL (the embedded server needs no pooler)');
  const embeddedPort =
    int(env['MODEMFLEET_PG_PORT'], 'MODEMFLEET_PG_PORT', problems, 1024, 65535) ??
    int(file['embeddedPort'], 'embeddedPort', problems, 1024, 65535) ??
    DEFAULT_EMBEDDED_PORT;
  const hostId =
    str(env['MODEMFLEET_HOST_ID'], 'MODEMFLEET_HOST_ID', problems) ??
    str(file['hostId'], 'hostId', problems) ??
    defaultHostId();
  if (!HOST_ID_PATTERN.test(hostId))
    problems.push(`hostId: '${hostId.slice(0, 64)}' must be 1-63 letters, digits, '.', '_' or '-'`);
  const apiToken = str(env['MODEMFLEET_API_TOKEN'], 'MODEMFLEET_API_TOKEN', problems);
  if (apiToken !== undefined && !/^[\x21-\x7e]{16,256}$/.test(apiToken))
    problems.push('MODEMFLEET_API_TOKEN: must be 16-256 printable characters without spaces');
  const httpEnv = parseListen(env['MODEMFLEET_HTTP'], 'MODEMFLEET_HTTP', problems);
  const httpFile = parseListen(file['http'], 'http', problems);
  const http =
    httpEnv !== undefined ? httpEnv : httpFile !== undefined ? httpFile : { host: '127.0.0.1', port: 8080 };
  const hosts =
    allowedHosts(env['MODEMFLEET_ALLOWED_HOSTS'], 'MODEMFLEET_ALLOWED_HOSTS', problems, true) ??
    allowedHosts(file['allowedHosts'], 'allowedHosts', problems) ??
    [];
  const proxyHost = str(file['proxyHost'], 'proxyHost', problems);
  if (proxyHost !== undefined && !/^[A-Za-z0-9.:_-]{1,253}$/.test(proxyHost))
    problems.push('proxyHost: a host name or address');
  const threeProxyPath =
    str(env['MODEMFLEET_3PROXY'], 'MODEMFLEET_3PROXY', problems) ??
    str(file['threeProxyPath'], 'threeProxyPath', problems);

  const config: Config = {
    stateDir: resolve(stateDir),
    databaseUrl,
    databaseListenUrl,
    embeddedPort,
    hostId,
    apiToken,
    threeProxyPath,
    allocation: ranges(file['allocation'], problems),
    policy: policy(file['policy'], problems),
    scan: scan(file['scan'], problems),
    hotplug: 'udev',
    apn: str(file['apn'], 'apn', problems),
    apnByOperator: apnMap(file['apnByOperator'], problems),
    switchUsbnet: false,
    mtu: int(file['mtu'], 'mtu', problems, 576, 9000) ?? 1500,
    powerCycleCommand: argv(file['powerCycleCommand'], 'powerCycleCommand', problems),
    modem: modem(file['modem'], problems),
    spoolFsync: 'always',
    spoolMaxBytes:
      int(file['spoolMaxBytes'], 'spoolMaxBytes', problems, 65_536, 2 ** 40) ?? DEFAULT_SPOOL_MAX_BYTES,
    dataPlane: dataPlane(file['dataPlane'], resolve(stateDir), problems),
    http: http ?? undefined,
    allowedHosts: hosts,
    proxyHost,
    rotation: { schedule: undefined, noReuse: undefined },
    webhooks: webhooks(file['webhooks'], problems),
  };
  config.rotation = rotation(file['rotation'], config.policy.rotationScheduleMinSeconds, problems);
  const uidBase = config.dataPlane?.proxyUidBase;
  if (uidBase !== undefined) {
    // one uid per slot, reserved for the proxies: never nobody (65534) or the 16-bit -1 (65535)
    const last = uidBase + slotCount(config.allocation) - 1;
    if (uidBase <= 65_535 && last >= 65_534)
      problems.push(
        `dataPlane.proxyUidBase: the proxies' uids ${uidBase}-${last} (one per allocation slot) would include 65534 (nobody); choose a lower base or fewer slots`,
      );
  }
  const offset = config.dataPlane?.openPortOffset;
  if (offset !== undefined) {
    const { httpPort, socksPort } = config.allocation;
    const meets = (a: { from: number; to: number }, b: { from: number; to: number }): boolean =>
      a.from <= b.to && b.from <= a.to;
    const shifted = [httpPort, socksPort].map((r) => ({ from: r.from + offset, to: r.to + offset }));
    if (shifted.some((r) => r.to > 65_535 || meets(r, httpPort) || meets(r, socksPort)))
      problems.push(
        `dataPlane.openPortOffset: the allowlist's ports (the port ranges + ${offset}) must stay within 65535 and not meet allocation.httpPort or allocation.socksPort`,
      );
  }
  if (config.proxyHost === undefined && config.dataPlane && config.dataPlane.listen !== '0.0.0.0')
    config.proxyHost = config.dataPlane.listen;
  const hotplug = file['hotplug'];
  if (hotplug === 'udev' || hotplug === 'watch' || hotplug === 'none') config.hotplug = hotplug;
  else if (hotplug !== undefined) problems.push(`hotplug: must be "udev", "watch" or "none"`);
  const fsync = file['spoolFsync'];
  if (fsync === 'always' || fsync === 'never') config.spoolFsync = fsync;
  else if (fsync !== undefined) problems.push(`spoolFsync: must be "always" or "never"`);
  if (config.apn !== undefined && !APN.test(config.apn))
    problems.push('apn: letters, digits, dots and dashes, at most 62');
  const switchUsbnet = file['switchUsbnet'];
  if (typeof switchUsbnet === 'boolean') config.switchUsbnet = switchUsbnet;
  else if (switchUsbnet !== undefined) problems.push('switchUsbnet: must be true or false');
  const unknownPower = unknownPlaceholders(config.powerCycleCommand ?? []);
  if (unknownPower.length > 0)
    problems.push(
      `powerCycleCommand: unknown placeholder(s) ${unknownPower.map((n) => `{${n}}`).join(', ')} (known: ${POWER_PLACEHOLDERS.map((n) => `{${n}}`).join(', ')})`,
    );
  if (config.policy.httpHeadersTimeoutMs > config.policy.httpRequestTimeoutMs)
    problems.push('policy.httpHeadersTimeoutMs: must not exceed policy.httpRequestTimeoutMs');
  if (config.modem.powerCycle && !config.powerCycleCommand)
    problems.push('modem.powerCycle: needs powerCycleCommand');
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}
