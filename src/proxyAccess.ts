import { isIPv4, isIPv6 } from 'node:net';
import { v4Number, v6Bits } from './net/nftRuleset.js';

/**
 * What a modem's proxy lets in besides its own login (the allocation's, rotated by the credentials
 * API): more logins, each with its own password, the ports it works on and an optional expiry; an
 * allowlist of client networks that need no password; download and upload speed limits. Types and
 * validation only (pure): the store, the API, the CLI and the data plane share these checks, so a
 * value that reaches a config file, an nft rule or a tc command was checked here first.
 */

/** The ports a login works on: `http` (3proxy, tinyproxy) and `socks` (3proxy; microsocks only the modem's own login). */
export const LOGIN_PORTS = ['http', 'socks'] as const;
export type LoginPort = (typeof LOGIN_PORTS)[number];

/** Operator-chosen usernames: no `:` or `,` (3proxy's `users` and ACL lists), tinyproxy's ALNUM. */
export const LOGIN_USERNAME = /^[a-z0-9][a-z0-9_-]{2,31}$/;
/** The same alphabet as the modem's own password (allocations): safe in every backend's config. */
export const LOGIN_PASSWORD = /^[A-Za-z0-9_-]{12,64}$/;

/** Bounds: more than these is a mistake, not a customer base of one modem. */
export const ACCESS_LIMITS = {
  loginsPerModem: 32,
  allowlistEntries: 64,
  /** kbit/s (1 kbit = 1000 bits), both directions. */
  minKbps: 8,
  maxKbps: 10_000_000,
} as const;

/** A login as the data plane serves it: `expiresAtMs` on this host's clock (null: never). */
export interface ServedLogin {
  username: string;
  password: string;
  ports: readonly LoginPort[];
  expiresAtMs: number | null;
}

/** Speed limits of a modem's traffic in kbit/s (1000 bits per second); null: unlimited. */
export interface SpeedLimits {
  downloadKbps: number | null;
  uploadKbps: number | null;
}

export const NO_LIMITS: SpeedLimits = { downloadKbps: null, uploadKbps: null };

/** Everything beyond the modem's own login that its data plane applies. */
export interface ProxyAccess {
  logins: readonly ServedLogin[];
  /** Client networks (canonical CIDR, IPv4 or IPv6) that need no password. */
  allowlist: readonly string[];
  limits: SpeedLimits;
}

export const NO_ACCESS: ProxyAccess = { logins: [], allowlist: [], limits: NO_LIMITS };

/** The logins still valid at `nowMs`. */
export const liveLogins = (access: ProxyAccess, nowMs: number): ServedLogin[] =>
  access.logins.filter((l) => l.expiresAtMs === null || l.expiresAtMs > nowMs);

/** When the next of the logins valid at `nowMs` expires (null: none does). */
export function nextExpiry(access: ProxyAccess, nowMs: number): number | null {
  const times = liveLogins(access, nowMs).flatMap((l) => (l.expiresAtMs === null ? [] : [l.expiresAtMs]));
  return times.length ? Math.min(...times) : null;
}

/**
 * One allowlist entry: an IPv4 or IPv6 address (a single host) or a network in CIDR notation with
 * no host bits set. Returns its canonical form (`10.1.2.3` → `10.1.2.3/32`), or a problem. A prefix
 * of length 0 is refused: it would let the whole internet in without a password.
 */
export function parseCidr(value: unknown): { cidr: string } | { problem: string } {
  if (typeof value !== 'string' || value.length > 64)
    return { problem: 'is not a string of at most 64 characters' };
  const [address = '', lenText, extra] = value.split('/');
  if (extra !== undefined) return { problem: 'has more than one /' };
  const v4 = isIPv4(address);
  const v6 = !v4 && isIPv6(address) && /^[0-9A-Fa-f:.]+$/.test(address);
  if (!v4 && !v6) return { problem: 'is not an IPv4 or IPv6 address or network' };
  const bits = v4 ? 32 : 128;
  if (lenText !== undefined && !/^\d{1,3}$/.test(lenText)) return { problem: 'has an invalid prefix length' };
  const len = lenText === undefined ? bits : Number(lenText);
  if (len > bits) return { problem: `has a prefix length above ${bits}` };
  if (len === 0) return { problem: 'is the whole address space: everyone would get in without a password' };
  const hostBits = v4
    ? len < 32 && v4Number(address) % 2 ** (32 - len) !== 0
    : len < 128 && (v6Bits(address) & ((1n << BigInt(128 - len)) - 1n)) !== 0n;
  if (hostBits) return { problem: 'has host bits set (give the network address)' };
  return { cidr: `${v4 ? address : address.toLowerCase()}/${len}` };
}

/** A whole allowlist: the canonical entries (duplicates dropped), or every problem as `[i] "x": why`. */
export function parseAllowlist(value: unknown): { allowlist: string[] } | { problems: string[] } {
  if (!Array.isArray(value)) return { problems: ['the allowlist must be a JSON array of CIDR strings'] };
  if (value.length > ACCESS_LIMITS.allowlistEntries)
    return { problems: [`at most ${ACCESS_LIMITS.allowlistEntries} entries`] };
  const problems: string[] = [];
  const out: string[] = [];
  value.forEach((entry, i) => {
    const parsed = parseCidr(entry);
    const shown = typeof entry === 'string' ? JSON.stringify(entry.slice(0, 64)) : typeof entry;
    if ('problem' in parsed) problems.push(`[${i}] ${shown}: ${parsed.problem}`);
    else if (!out.includes(parsed.cidr)) out.push(parsed.cidr);
  });
  return problems.length ? { problems } : { allowlist: out };
}

/** Speed limits from a request: kbit/s integers in bounds, or null (unlimited); every problem. */
export function parseLimits(value: unknown): { limits: SpeedLimits } | { problems: string[] } {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return { problems: ['expected {"downloadKbps": N|null, "uploadKbps": N|null}'] };
  const v = value as Record<string, unknown>;
  const problems = Object.keys(v)
    .filter((k) => k !== 'downloadKbps' && k !== 'uploadKbps')
    .map((k) => `${k.slice(0, 32)}: unknown field (downloadKbps, uploadKbps)`);
  const one = (name: 'downloadKbps' | 'uploadKbps'): number | null => {
    const x = v[name];
    if (x === undefined || x === null) return null;
    if (
      typeof x !== 'number' ||
      !Number.isInteger(x) ||
      x < ACCESS_LIMITS.minKbps ||
      x > ACCESS_LIMITS.maxKbps
    ) {
      problems.push(
        `${name}: an integer number of kbit/s (1 kbit = 1000 bits) within ${ACCESS_LIMITS.minKbps}-${ACCESS_LIMITS.maxKbps}, or null for no limit`,
      );
      return null;
    }
    return x;
  };
  const limits = { downloadKbps: one('downloadKbps'), uploadKbps: one('uploadKbps') };
  return problems.length ? { problems } : { limits };
}

/** A new login from a request (`expiresAt` is checked against the database's clock by the store). */
export interface LoginRequest {
  username: string;
  password?: string | undefined;
  ports?: readonly LoginPort[] | undefined;
  expiresAt?: string | undefined;
}

/** Problems of a login request, as `field: why` (empty when fine). */
export function loginProblems(value: unknown): string[] {
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return ['expected {"username", "password"?, "ports"?, "expiresAt"?}'];
  const v = value as Record<string, unknown>;
  const problems = Object.keys(v)
    .filter((k) => !['username', 'password', 'ports', 'expiresAt'].includes(k))
    .map((k) => `${k.slice(0, 32)}: unknown field`);
  if (typeof v['username'] !== 'string' || !LOGIN_USERNAME.test(v['username']))
    problems.push('username: 3-32 of a-z, 0-9, _ and -, starting with a letter or digit');
  if (
    v['password'] !== undefined &&
    (typeof v['password'] !== 'string' || !LOGIN_PASSWORD.test(v['password']))
  )
    problems.push('password: 12-64 of A-Z, a-z, 0-9, _ and - (or leave it out for a generated one)');
  const ports = v['ports'];
  if (
    ports !== undefined &&
    (!Array.isArray(ports) ||
      ports.length === 0 ||
      ports.length > 2 ||
      new Set(ports).size !== ports.length ||
      !ports.every((p) => (LOGIN_PORTS as readonly unknown[]).includes(p)))
  )
    problems.push('ports: a non-empty list of "http" and "socks"');
  const expiresAt = v['expiresAt'];
  if (expiresAt !== undefined && (typeof expiresAt !== 'string' || !isTimestamp(expiresAt)))
    problems.push('expiresAt: an ISO 8601 time with a zone, e.g. 2026-12-31T23:59:59Z');
  return problems;
}

/** An ISO 8601 date-time with a zone (Z or ±hh:mm): unambiguous whatever the host's zone. */
export function isTimestamp(text: string): boolean {
  return (
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})$/.test(text) &&
    Number.isFinite(Date.parse(text))
  );
}
