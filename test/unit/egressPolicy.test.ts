import { describe, expect, it } from 'vitest';
import {
  DEFAULT_DENY_V4,
  DEFAULT_DENY_V6,
  checkPrefixes,
  egressPolicyTable,
  minimalPrefixes,
  type EgressPolicySpec,
} from '../../src/net/egressPolicy.js';
import { renderTable } from '../../src/net/nftRuleset.js';

const spec: EgressPolicySpec = {
  uids: { from: 61000, to: 61999 },
  allow: ['198.18.0.1', '2001:db8:1::/48'],
  deny: ['203.0.113.0/24', '10.9.0.0/16', '2001:db8:2::/48'],
  internet: true,
  modems: [
    { uid: 61000, link: 'wwan0' },
    { uid: 61003, link: 'wwp0s20u1i4' },
  ],
};

const lines = (text: string): string[] => text.split('\n').map((l) => l.trim());

describe('egress policy table', () => {
  it('every proxy uid jumps to proxy_out: replies, allow, this host, own link, then refused', () => {
    const text = renderTable(egressPolicyTable(spec));
    const rules = lines(text);
    const at = (fragment: string): number => rules.findIndex((l) => l.includes(fragment));
    expect(rules).toContain('meta skuid 61000-61999 jump proxy_out comment "every proxy uid"');
    expect(text).toContain('type filter hook output priority filter; policy accept;');
    // order is the policy: replies first, then the allowlist, then the host, then per-modem rules
    const order = [
      at('ct state { established, related } accept'),
      at('ip daddr @allow_v4 accept'),
      at('ip6 daddr @allow_v6 accept'),
      at('fib daddr type local counter reject'),
      at('meta skuid 61000 oifname "wwan0" udp dport 53 accept'),
      at('meta skuid 61000 oifname "wwan0" tcp dport 53 accept'),
      at('meta skuid 61000 oifname "wwan0" jump to_internet'),
      at('meta skuid 61003 oifname "wwp0s20u1i4" jump to_internet'),
      at('counter reject comment "not through its own modem"'),
    ];
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    // the internet: the special-purpose blocks and the configured denies refused, the rest accepted
    expect(rules).toContain('ip daddr @deny_v4 counter reject comment "deny"');
    expect(rules).toContain('ip6 daddr @deny_v6 counter reject comment "deny"');
    expect(rules).toContain('accept comment "the internet"');
    expect(text).toContain('elements = { 198.18.0.1 }');
    expect(text).toContain('elements = { 2001:db8:1::/48 }');
    // 10.9.0.0/16 is inside 10.0.0.0/8: nftables refuses overlapping intervals, so it goes
    expect(text).toContain(`elements = { ${[...DEFAULT_DENY_V4, '203.0.113.0/24'].join(', ')} }`);
    expect(text).not.toContain('10.9.0.0/16');
    expect(text).toContain('::ffff:0:0/96');
    expect(text).toContain('2001:db8:2::/48');
  });

  it('what the deny lists hold: RFC 1918, CGNAT, loopback, link-local, multicast; v6 ULA, link-local, mapped', () => {
    for (const block of [
      '10.0.0.0/8',
      '172.16.0.0/12',
      '192.168.0.0/16',
      '100.64.0.0/10',
      '127.0.0.0/8',
      '169.254.0.0/16',
      '224.0.0.0/4',
    ])
      expect(DEFAULT_DENY_V4).toContain(block);
    for (const block of ['::1/128', 'fc00::/7', 'fe80::/10', 'ff00::/8', '::ffff:0:0/96'])
      expect(DEFAULT_DENY_V6).toContain(block);
  });

  it('without the internet (the demo): only the allowlist, no per-modem way out', () => {
    const text = renderTable(
      egressPolicyTable({
        ...spec,
        allow: ['127.0.0.2'],
        internet: false,
        modems: [{ uid: 61000, link: 'lo' }],
      }),
    );
    expect(text).toContain('elements = { 127.0.0.2 }');
    expect(text).not.toContain('jump to_internet');
    expect(text).toContain('counter reject comment "not through its own modem"');
  });

  it('refuses a bad link name or uid before anything is rendered', () => {
    expect(() =>
      egressPolicyTable({ ...spec, modems: [{ uid: 61000, link: 'wwan0"; flush ruleset' }] }),
    ).toThrow(/egress policy: modem link/);
    expect(() => renderTable(egressPolicyTable({ ...spec, uids: { from: 62000, to: 61000 } }))).toThrow(
      /ends before it starts/,
    );
  });

  it('prefix lists: addresses and prefixes of both families, nothing else; nested prefixes merged', () => {
    expect(checkPrefixes(['192.0.2.1', '192.0.2.0/24', '2001:db8::/32', '::1'], 'x')).toEqual([]);
    expect(checkPrefixes(['192.0.2.1/24', 'host', '1.2.3.4-1.2.3.5', 7], 'x')).toEqual([
      expect.stringMatching(/^x\[0\]: .*host bits/),
      expect.stringMatching(/^x\[1\]: not an IPv4\/IPv6/),
      expect.stringMatching(/^x\[2\]: not an IPv4\/IPv6/),
      expect.stringMatching(/^x\[3\]: not an IPv4\/IPv6/),
    ]);
    expect(checkPrefixes('10.0.0.0/8', 'x')).toEqual([
      'x: must be an array of IPv4/IPv6 addresses or prefixes',
    ]);
    expect(minimalPrefixes(['10.0.0.0/8', '10.1.2.3', '10.0.0.0/8', '11.0.0.0/8', 'fc00::/7'], 'ip')).toEqual(
      ['10.0.0.0/8', '11.0.0.0/8'],
    );
    expect(minimalPrefixes(['fd00::1', 'fc00::/7', '2001:db8::/32'], 'ip6')).toEqual([
      'fc00::/7',
      '2001:db8::/32',
    ]);
  });
});
