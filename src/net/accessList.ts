import { isIPv4 } from 'node:net';
import { applyTable, deleteTable, type NftOptions } from './nft.js';
import type { NftRule, NftTable } from './nftRuleset.js';

/**
 * A modem's allowlist in the kernel, for backends that cannot exempt a client network from their
 * login (microsocks 1.0.3 has one login and no client list; tinyproxy 1.11 asks every client for
 * its BasicAuth). Beside the modem's proxies run password-less companions on their own ports
 * (`openHttpPort`, `openSocksPort`); this table (one per modem, `inet mf_access_<slot>`):
 * - redirects new connections from the listed networks to the modem's ports on this host onto the
 *   companions' (nat prerouting for remote clients, nat output for clients on this host);
 * - refuses any other client at the companions' ports (filter input), so nobody reaches the
 *   password-less ports except the listed networks (tinyproxy's own `Allow` is a second wall).
 * Everyone else still meets the modem's proxies and their logins. IPv6 networks are kept (3proxy
 * serves them) but the ports listen on IPv4 only, so they are redirected for IPv4 clients only.
 */
export interface AccessListSpec {
  slot: number;
  /** Canonical CIDRs (src/proxyAccess.ts `parseAllowlist`). */
  allowlist: readonly string[];
  httpPort: number;
  socksPort: number;
  openHttpPort: number;
  openSocksPort: number;
}

export const accessTableName = (slot: number): string => `mf_access_${slot}`;

export function accessListTable(spec: AccessListSpec): NftTable {
  const v4 = spec.allowlist.filter((c) => isIPv4(c.split('/')[0] ?? ''));
  const v6 = spec.allowlist.filter((c) => !isIPv4(c.split('/')[0] ?? ''));
  const redirect: NftRule[] = v4.length
    ? [
        {
          match: [
            { match: 'saddr', family: 'ip', value: v4 },
            { match: 'daddrType', value: 'local' },
            { match: 'dport', proto: 'tcp', value: spec.httpPort },
          ],
          then: [{ do: 'redirect', port: spec.openHttpPort }],
          comment: 'allowlist http',
        },
        {
          match: [
            { match: 'saddr', family: 'ip', value: v4 },
            { match: 'daddrType', value: 'local' },
            { match: 'dport', proto: 'tcp', value: spec.socksPort },
          ],
          then: [{ do: 'redirect', port: spec.openSocksPort }],
          comment: 'allowlist socks',
        },
      ]
    : [];
  const open = [spec.openHttpPort, spec.openSocksPort];
  const guard: NftRule[] = [
    ...(v4.length
      ? [
          {
            match: [
              { match: 'saddr', family: 'ip', value: v4 },
              { match: 'dport', proto: 'tcp', value: open },
            ] as const,
            then: [{ do: 'accept' }] as const,
          },
        ]
      : []),
    ...(v6.length
      ? [
          {
            match: [
              { match: 'saddr', family: 'ip6', value: v6 },
              { match: 'dport', proto: 'tcp', value: open },
            ] as const,
            then: [{ do: 'accept' }] as const,
          },
        ]
      : []),
    {
      match: [{ match: 'dport', proto: 'tcp', value: open }],
      then: [{ do: 'reject', tcpReset: true }],
      comment: 'not allowlisted',
    },
  ];
  return {
    family: 'inet',
    name: accessTableName(spec.slot),
    chains: [
      {
        name: 'from_outside',
        base: { type: 'nat', hook: 'prerouting', priority: 'dstnat' },
        rules: redirect,
      },
      { name: 'from_host', base: { type: 'nat', hook: 'output', priority: -100 }, rules: redirect },
      {
        name: 'open_ports',
        base: { type: 'filter', hook: 'input', priority: 'filter', policy: 'accept' },
        rules: guard,
      },
    ],
  };
}

/** Applies (replaces) the modem's allowlist table; an empty allowlist removes it. */
export async function applyAccessList(spec: AccessListSpec, options: NftOptions = {}): Promise<void> {
  if (spec.allowlist.length === 0) return removeAccessList(spec.slot, options);
  await applyTable(accessListTable(spec), options);
}

export async function removeAccessList(slot: number, options: NftOptions = {}): Promise<void> {
  await deleteTable('inet', accessTableName(slot), options);
}
