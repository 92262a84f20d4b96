import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import { parseTable } from '../../src/net/nft.js';
import {
  checkAddressSpec,
  renderDeleteTable,
  renderTable,
  type NftMatch,
  type NftStatement,
  type NftTable,
} from '../../src/net/nftRuleset.js';

const golden = (name: string) => readFile(join(import.meta.dirname, '..', 'fixtures', 'nft', name), 'utf8');

/** The lab's coming carrier NAT: each modem's private addresses SNATed to a pool of public ones. */
const carrierNat: NftTable = {
  family: 'ip',
  name: 'mf_carrier',
  counters: ['nat_all'],
  chains: [
    {
      name: 'post_nat',
      base: { type: 'nat', hook: 'postrouting', priority: 'srcnat' },
      rules: [
        {
          match: [
            { match: 'saddr', family: 'ip', value: '100.65.0.0/16' },
            { match: 'oifname', value: 'inet0' },
          ],
          then: [
            { do: 'counter', name: 'nat_all' },
            { do: 'snatPool', family: 'ip', pool: ['198.51.100.1', '198.51.100.2'] },
          ],
          comment: 'carrier nat',
        },
      ],
    },
    {
      name: 'in_nat',
      base: { type: 'nat', hook: 'input', priority: 100 },
      rules: [
        {
          match: [{ match: 'saddr', family: 'ip', value: ['100.65.1.0/24', '100.65.2.0/24'] }],
          then: [{ do: 'counter' }, { do: 'snat', family: 'ip', to: '198.51.100.9' }],
        },
      ],
    },
  ],
};

/** The shape of the proxies' coming egress policy: per-uid rules, sets, a quota. */
const egress: NftTable = {
  family: 'inet',
  name: 'mf_egress',
  sets: [
    { name: 'host_nets', type: 'ipv4_addr', elements: ['127.0.0.0/8', '10.0.0.0/8', '192.168.77.2'] },
    { name: 'proxy_uids', type: 'uid', elements: [61000, 61001] },
    { name: 'modem_links', type: 'ifname', elements: ['wwan0', 'wwan1'] },
    { name: 'web_ports', type: 'inet_service', elements: [80, 443] },
  ],
  quotas: [{ name: 'modem_0_quota', bytes: 10_000_000_000, over: true }],
  chains: [
    {
      name: 'proxy_out',
      base: { type: 'filter', hook: 'output', priority: 0, policy: 'accept' },
      rules: [
        { match: [{ match: 'ctstate', value: ['established', 'related'] }], then: [{ do: 'accept' }] },
        {
          match: [{ match: 'skuid', value: { set: 'proxy_uids' } }],
          then: [{ do: 'jump', chain: 'proxy_check' }],
        },
      ],
    },
    {
      name: 'proxy_check',
      rules: [
        {
          match: [{ match: 'nfproto', value: 'ipv6' }],
          then: [{ do: 'counter' }, { do: 'reject' }],
          comment: 'no ipv6 around the modem',
        },
        {
          match: [{ match: 'daddr', family: 'ip', value: { set: 'host_nets' } }],
          then: [{ do: 'counter' }, { do: 'drop' }],
        },
        {
          match: [{ match: 'skuid', value: 61000 }],
          then: [{ do: 'quota', name: 'modem_0_quota' }, { do: 'drop' }],
        },
        {
          match: [
            { match: 'skuid', value: { from: 61000, to: 61999 } },
            { match: 'oifname', value: { set: 'modem_links' } },
            { match: 'dport', proto: 'tcp', value: { set: 'web_ports' } },
          ],
          then: [{ do: 'counter' }, { do: 'accept' }],
          comment: 'modem 866834040000017',
        },
        {
          match: [
            { match: 'l4proto', value: 'udp' },
            { match: 'dport', proto: 'udp', value: [53, { from: 5353, to: 5354 }] },
            { match: 'oifname', value: 'wwan*', not: true },
            { match: 'mark', value: 16 },
          ],
          then: [{ do: 'reject', tcpReset: false }],
        },
        { then: [{ do: 'counter' }, { do: 'reject', tcpReset: true }] },
      ],
    },
  ],
};

describe('nftables ruleset text', () => {
  it('carrier NAT: golden file (delete-then-define, jhash pool, named counter, comment)', async () => {
    expect(renderTable(carrierNat)).toBe(await golden('carrierNat.nft'));
  });

  it('egress policy: golden file (sets, per-uid rules, quota, jump, ranges, negation)', async () => {
    expect(renderTable(egress)).toBe(await golden('egress.nft'));
  });

  it('IPv6: ip6 matches, a jhash pool and a DNAT to [address]:port (checked with nft -c)', () => {
    const text = renderTable({
      family: 'ip6',
      name: 'mf_v6',
      chains: [
        {
          name: 'post_nat',
          base: { type: 'nat', hook: 'postrouting', priority: 'srcnat' },
          rules: [
            {
              match: [{ match: 'saddr', family: 'ip6', value: '2001:db8::/32' }],
              then: [{ do: 'snatPool', family: 'ip6', pool: ['2001:db8::1', '2001:db8::2'] }],
            },
          ],
        },
        {
          name: 'pre_nat',
          base: { type: 'nat', hook: 'prerouting', priority: 'dstnat' },
          rules: [
            {
              match: [{ match: 'dport', proto: 'tcp', value: 80 }],
              then: [{ do: 'dnat', family: 'ip6', to: '2001:db8::5', port: 8080 }],
            },
          ],
        },
      ],
    });
    expect(text).toContain(
      '\t\tip6 saddr 2001:db8::/32 snat ip6 to jhash ip6 saddr mod 2 map { 0 : 2001:db8::1, 1 : 2001:db8::2 }\n',
    );
    expect(text).toContain('\t\ttcp dport 80 dnat ip6 to [2001:db8::5]:8080\n');
  });

  it('deleting: creates then deletes, so a missing table is no error', () => {
    expect(renderDeleteTable('inet', 'mf_egress')).toBe(
      'table inet mf_egress\ndelete table inet mf_egress\n',
    );
  });

  const nat = (then: NftStatement[], match: NftMatch[] = []): NftTable => ({
    family: 'ip',
    name: 'mf_t',
    chains: [
      {
        name: 'post_nat',
        base: { type: 'nat', hook: 'postrouting', priority: 'srcnat' },
        rules: [{ match, then }],
      },
    ],
  });
  const bad: [string, () => NftTable, string][] = [
    [
      'a keyword as a table name',
      () => ({ ...carrierNat, name: 'counter' }),
      'table ip: "counter" is not a name',
    ],
    ['a name with a quote', () => ({ ...carrierNat, name: 'mf_"x' }), 'is not a name'],
    [
      'an unknown family',
      () => ({ ...carrierNat, family: 'bridge' as never }),
      'table family: "bridge" is not ip, ip6 or inet',
    ],
    [
      'an address from a modem with a shell tail',
      () => nat([{ do: 'snat', family: 'ip', to: '10.0.0.1; flush ruleset' }]),
      'table ip mf_t: chain post_nat: rule 1: statement 1: snat to: "10.0.0.1; flush ruleset" is not an IPv4 address',
    ],
    [
      'an octet out of range',
      () => nat([{ do: 'snatPool', family: 'ip', pool: ['198.51.100.300'] }]),
      '"198.51.100.300" is not an IPv4 address',
    ],
    [
      'an IPv6 address in an IPv4 match',
      () => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip', value: '::1' }]),
      'is not an IPv4 address',
    ],
    [
      'an ip6 match in an ip table',
      () => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip6', value: '::1' }]),
      'does not belong in a table of family ip',
    ],
    [
      'a zone id',
      () => ({
        ...nat([{ do: 'masquerade' }]),
        family: 'ip6' as const,
        chains: nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip6', value: 'fe80::1%eth0' }])
          .chains,
      }),
      'is not an IPv6 address',
    ],
    [
      'host bits in a prefix',
      () => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip', value: '100.65.1.7/24' }]),
      'has host bits set',
    ],
    [
      'a prefix too long',
      () => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip', value: '100.65.1.0/33' }]),
      'invalid prefix length',
    ],
    [
      'an interface name with a newline',
      () => nat([{ do: 'masquerade' }], [{ match: 'oifname', value: 'wwan0"\nflush ruleset' }]),
      'is not an interface name',
    ],
    [
      'an interface name too long',
      () => nat([{ do: 'masquerade' }], [{ match: 'oifname', value: 'a'.repeat(16) }]),
      'is not an interface name',
    ],
    [
      'port 0',
      () => nat([{ do: 'masquerade' }], [{ match: 'dport', proto: 'tcp', value: 0 }]),
      '0 is not a port (1-65535)',
    ],
    [
      'a port range backwards',
      () => nat([{ do: 'masquerade' }], [{ match: 'dport', proto: 'tcp', value: { from: 90, to: 80 } }]),
      'ends before it starts',
    ],
    [
      'a uid out of range',
      () => nat([{ do: 'masquerade' }], [{ match: 'skuid', value: -1 }]),
      'is not a uid/gid',
    ],
    [
      'a fractional uid',
      () => nat([{ do: 'masquerade' }], [{ match: 'skuid', value: 1.5 }]),
      'is not a uid/gid',
    ],
    [
      'a comment with a quote',
      () => ({
        ...nat([{ do: 'accept' }]),
        chains: [{ name: 'x_y', rules: [{ then: [{ do: 'accept' }], comment: 'a"b' }] }],
      }),
      'is not a comment',
    ],
    [
      'snat outside a nat chain',
      () => ({ ...carrierNat, chains: [{ name: 'x_y', rules: [{ then: [{ do: 'masquerade' }] }] }] }),
      'belongs in a nat chain on postrouting',
    ],
    [
      'a jump to a missing chain',
      () => nat([{ do: 'jump', chain: 'no_such' }]),
      '"no_such" names no chain of this table',
    ],
    [
      'a missing set',
      () => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip', value: { set: 'no_such' } }]),
      'names no set of this table',
    ],
    [
      'a missing counter',
      () => nat([{ do: 'counter', name: 'no_such' }, { do: 'masquerade' }]),
      'names no counter of this table',
    ],
    [
      'a verdict before the end',
      () => nat([{ do: 'accept' }, { do: 'counter' }]),
      'ends the rule but is not last',
    ],
    ['a rule without statements', () => nat([]), 'does nothing'],
    [
      'an empty list',
      () => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip', value: [] }]),
      'is an empty list',
    ],
    [
      'nfproto outside inet',
      () => nat([{ do: 'masquerade' }], [{ match: 'nfproto', value: 'ipv4' }]),
      'only meaningful in an inet table',
    ],
    [
      'a chain defined twice',
      () => ({ ...carrierNat, chains: [carrierNat.chains[0]!, carrierNat.chains[0]!] }),
      'is defined twice',
    ],
    [
      'a priority out of range',
      () => ({
        ...nat([{ do: 'masquerade' }]),
        chains: [{ name: 'x_y', base: { type: 'nat', hook: 'postrouting', priority: 5000 }, rules: [] }],
      }),
      'is not a priority',
    ],
    [
      'srcnat off postrouting',
      () => ({
        ...nat([{ do: 'masquerade' }]),
        chains: [{ name: 'x_y', base: { type: 'nat', hook: 'input', priority: 'srcnat' }, rules: [] }],
      }),
      '"srcnat" is not a priority name on hook input',
    ],
    [
      'a nat chain on forward',
      () => ({
        ...nat([{ do: 'masquerade' }]),
        chains: [{ name: 'x_y', base: { type: 'nat', hook: 'forward', priority: 0 }, rules: [] }],
      }),
      'is not a hook of a nat chain',
    ],
    [
      'a bad set element',
      () => ({
        ...egress,
        sets: [{ name: 'host_nets', type: 'ipv4_addr', elements: ['10.0.0.0/8', 'localhost'] }],
      }),
      'set host_nets: "localhost" is not an IPv4 address',
    ],
  ];
  it.each(bad)('refuses %s with invalid_ruleset, naming where', (_what, table, message) => {
    let err: unknown;
    try {
      renderTable(table());
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'invalid_ruleset' });
    expect((err as Error).message).toContain(message);
  });

  it('addresses: prefixes and ranges, IPv4 and IPv6', () => {
    expect(checkAddressSpec('10.0.0.0/8', 'ip', 'x')).toBe('10.0.0.0/8');
    expect(checkAddressSpec('0.0.0.0/0', 'ip', 'x')).toBe('0.0.0.0/0');
    expect(checkAddressSpec('10.0.0.1-10.0.0.9', 'ip', 'x')).toBe('10.0.0.1-10.0.0.9');
    expect(checkAddressSpec('2001:db8::/32', 'ip6', 'x')).toBe('2001:db8::/32');
    expect(checkAddressSpec('::ffff:10.0.0.0/104', 'ip6', 'x')).toBe('::ffff:10.0.0.0/104');
    expect(() => checkAddressSpec('2001:db8::1/32', 'ip6', 'x')).toThrow('host bits');
    expect(() => checkAddressSpec('10.0.0.9-10.0.0.1', 'ip', 'x')).toThrow('ends before it starts');
    expect(() => checkAddressSpec('01.2.3.4', 'ip', 'x')).toThrow('not an IPv4 address');
  });

  // whatever a modem reports, it either is refused or renders as one token: never a new line,
  // statement, block or quoted string of its own
  const slots: [string, (v: string) => NftTable][] = [
    ['wwan0', (v) => nat([{ do: 'masquerade' }], [{ match: 'oifname', value: v }])],
    ['10.0.0.0/8', (v) => nat([{ do: 'masquerade' }], [{ match: 'saddr', family: 'ip', value: v }])],
    ['10.0.0.1', (v) => nat([{ do: 'snat', family: 'ip', to: v }])],
    [
      'ok',
      (v) => ({
        ...nat([{ do: 'accept' }]),
        chains: [{ name: 'x_y', rules: [{ then: [{ do: 'accept' }], comment: v }] }],
      }),
    ],
    ['mf_t', (v) => ({ ...nat([{ do: 'masquerade' }]), name: v })],
  ];
  test.prop([
    fc.oneof(
      fc.string({ unit: 'binary', maxLength: 40 }),
      fc.constantFrom('wwan0"', '1.2.3.4 }', 'a\nb', 'x;y'),
    ),
  ])('any string in any slot: refused or inert', (s) => {
    for (const [benign, build] of slots) {
      let text: string;
      try {
        text = renderTable(build(s));
      } catch (err) {
        expect(err).toMatchObject({ code: 'invalid_ruleset' });
        continue;
      }
      expect(text.split('\n').length).toBe(renderTable(build(benign)).split('\n').length);
      expect(s).toMatch(/^[A-Za-z0-9 _.:,@/=+*-]+$/);
    }
  });
});

describe('nft -j list table', () => {
  it('reads chains, rules with their counters and comments, named counters, quotas and sets', () => {
    const json = JSON.stringify({
      nftables: [
        { metainfo: { version: '1.0.6', json_schema_version: 1 } },
        { table: { family: 'ip', name: 'mf_t', handle: 2 } },
        { counter: { family: 'ip', name: 'nat_all', table: 'mf_t', handle: 4, packets: 3, bytes: 180 } },
        { quota: { family: 'ip', name: 'q_x', table: 'mf_t', handle: 5, bytes: 1000, used: 10, inv: true } },
        {
          set: {
            family: 'ip',
            name: 'pub_pool',
            table: 'mf_t',
            type: 'ipv4_addr',
            handle: 6,
            flags: ['interval'],
            elem: [
              '1.2.3.4',
              { prefix: { addr: '10.0.0.0', len: 8 } },
              { range: ['192.168.1.1', '192.168.1.9'] },
            ],
          },
        },
        {
          chain: {
            family: 'ip',
            table: 'mf_t',
            name: 'post_nat',
            handle: 1,
            type: 'nat',
            hook: 'postrouting',
            prio: 100,
            policy: 'accept',
          },
        },
        { chain: { family: 'ip', table: 'mf_t', name: 'sub_x', handle: 3 } },
        {
          rule: {
            family: 'ip',
            table: 'mf_t',
            chain: 'post_nat',
            handle: 10,
            comment: 'carrier nat',
            expr: [{ counter: 'nat_all' }, { masquerade: null }],
          },
        },
        {
          rule: {
            family: 'ip',
            table: 'mf_t',
            chain: 'sub_x',
            handle: 11,
            expr: [{ counter: { packets: 7, bytes: 420 } }, { accept: null }],
          },
        },
      ],
    });
    expect(parseTable('ip', 'mf_t', json)).toEqual({
      family: 'ip',
      name: 'mf_t',
      chains: [
        { name: 'post_nat', type: 'nat', hook: 'postrouting', priority: 100, policy: 'accept' },
        { name: 'sub_x' },
      ],
      rules: [
        { chain: 'post_nat', handle: 10, comment: 'carrier nat', counterName: 'nat_all' },
        { chain: 'sub_x', handle: 11, counter: { packets: 7, bytes: 420 } },
      ],
      counters: { nat_all: { packets: 3, bytes: 180 } },
      quotas: { q_x: { bytes: 1000, used: 10, over: true } },
      sets: {
        pub_pool: { type: 'ipv4_addr', elements: ['1.2.3.4', '10.0.0.0/8', '192.168.1.1-192.168.1.9'] },
      },
    });
    expect(() => parseTable('ip', 'mf_t', 'not json')).toThrow(
      expect.objectContaining({ code: 'nft_unreadable' }),
    );
  });
});
