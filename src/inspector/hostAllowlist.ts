import { networkInterfaces } from 'node:os';

/**
 * The Host header check against DNS rebinding: a page on an attacker's name that resolves to this
 * host must not reach the inspector, so a request is served only when its Host names this host in a
 * way the operator expects. Allowed by default: loopback names and addresses (`localhost`,
 * `*.localhost`, 127.0.0.0/8, ::1) and the addresses the inspector listens on (every interface's
 * address when it listens on a wildcard); then whatever the configuration's `allowedHosts` adds
 * (names or addresses, `*.example.com` for a domain's names, `*` for any). Ports are not compared.
 */
export class HostAllowlist {
  private readonly exact = new Set<string>();
  private readonly suffixes: string[] = [];
  private readonly any: boolean;

  constructor(listenHost: string, extra: readonly string[] = [], interfaces = interfaceAddresses) {
    this.any = extra.includes('*');
    const wildcard = listenHost === '0.0.0.0' || listenHost === '::' || listenHost === '';
    for (const h of ['localhost', '::1', ...(wildcard ? interfaces() : [listenHost]), ...extra]) {
      const name = normalise(h);
      if (name.startsWith('*.')) this.suffixes.push(name.slice(1));
      else if (name !== '*') this.exact.add(name);
    }
    this.suffixes.push('.localhost');
  }

  /** Whether a request with this Host header may be served (no header: an HTTP/1.0 client, allowed). */
  allows(hostHeader: string | undefined): boolean {
    if (this.any || hostHeader === undefined) return true;
    const name = hostName(hostHeader);
    if (name === undefined) return false;
    if (this.exact.has(name) || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name)) return true;
    return this.suffixes.some((s) => name.endsWith(s) && name.length > s.length);
  }

  /** What is allowed, for the error message and the log. */
  get names(): string[] {
    return [...this.exact, ...this.suffixes.map((s) => `*${s}`), '127.0.0.0/8', ...(this.any ? ['*'] : [])];
  }
}

/** `Name:port`, `[v6]:port`, `v4` → lowercase name or address without brackets and port. */
export function hostName(header: string): string | undefined {
  const h = header.trim().toLowerCase();
  const v6 = /^\[([0-9a-f:.]+)\](?::\d{1,5})?$/.exec(h);
  if (v6) return v6[1];
  const named = /^([a-z0-9._-]{1,253})(?::\d{1,5})?$/.exec(h);
  return named ? named[1]?.replace(/\.$/, '') : undefined;
}

const normalise = (h: string): string =>
  h
    .trim()
    .toLowerCase()
    .replace(/^\[|\]$/g, '')
    .replace(/\.$/, '');

function interfaceAddresses(): string[] {
  return Object.values(networkInterfaces())
    .flat()
    .flatMap((i) => (i ? [i.address.replace(/%.*$/, '')] : []));
}

/** A configured allowedHosts entry: a name (optionally `*.` before it), an address, or `*`. */
export const ALLOWED_HOST_PATTERN =
  /^(\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|[0-9a-fA-F:.]{2,45})$/;
