import { describe, expect, it } from 'vitest';
import { accessListTable } from '../../src/net/accessList.js';
import { renderTable } from '../../src/net/nftRuleset.js';
import {
  htbCommands,
  htbRate,
  ifbName,
  ingressCommands,
  ingressInPlace,
  uploadAckCommands,
  uploadAcksInPlace,
} from '../../src/net/shaping.js';
import {
  isTimestamp,
  liveLogins,
  loginProblems,
  nextExpiry,
  parseAllowlist,
  parseCidr,
  parseLimits,
  type ProxyAccess,
} from '../../src/proxyAccess.js';

describe('allowlist entries', () => {
  it.each([
    ['10.1.2.3', '10.1.2.3/32'],
    ['10.1.2.0/24', '10.1.2.0/24'],
    ['203.0.113.0/24', '203.0.113.0/24'],
    ['2001:DB8::/32', '2001:db8::/32'],
    ['::1', '::1/128'],
    ['fd00:1::5/128', 'fd00:1::5/128'],
  ])('%s → %s', (input, cidr) => {
    expect(parseCidr(input)).toEqual({ cidr });
  });

  it.each([
    ['10.1.2.3/24', /host bits/],
    ['2001:db8::1/32', /host bits/],
    ['0.0.0.0/0', /whole address space/],
    ['::/0', /whole address space/],
    ['10.0.0.0/33', /above 32/],
    ['10.0.0.0/8/8', /more than one/],
    ['10.0.0.0/x', /prefix length/],
    ['fe80::1%eth0', /not an IPv4 or IPv6/],
    ['example.com', /not an IPv4 or IPv6/],
    ['10.0.0.0/8 *', /prefix length/],
  ])('refuses %s', (input, problem) => {
    const r = parseCidr(input);
    expect('problem' in r && r.problem).toMatch(problem);
  });

  it('a whole list: canonical, duplicates dropped, every bad entry named', () => {
    expect(parseAllowlist(['10.0.0.0/8', '10.0.0.0/8', '2001:db8::/32'])).toEqual({
      allowlist: ['10.0.0.0/8', '2001:db8::/32'],
    });
    expect(parseAllowlist(['10.0.0.1/8', 7, 'x'])).toEqual({
      problems: [
        expect.stringMatching(/^\[0\] "10\.0\.0\.1\/8": has host bits/),
        expect.stringMatching(/^\[1\] number/),
        expect.stringMatching(/^\[2\] "x"/),
      ],
    });
    expect(parseAllowlist('10.0.0.0/8')).toEqual({ problems: [expect.stringMatching(/JSON array/)] });
    expect(parseAllowlist(Array.from({ length: 65 }, (_, i) => `10.0.${i}.0/24`))).toEqual({
      problems: ['at most 64 entries'],
    });
    expect(parseAllowlist([])).toEqual({ allowlist: [] });
  });
});

describe('speed limits and logins', () => {
  it('limits are whole kbit/s within bounds, or null', () => {
    expect(parseLimits({ downloadKbps: 8000, uploadKbps: null })).toEqual({
      limits: { downloadKbps: 8000, uploadKbps: null },
    });
    expect(parseLimits({})).toEqual({ limits: { downloadKbps: null, uploadKbps: null } });
    const bad = parseLimits({ downloadKbps: 7, uploadKbps: 1.5, rate: 3 });
    expect('problems' in bad && bad.problems).toEqual([
      'rate: unknown field (downloadKbps, uploadKbps)',
      expect.stringMatching(/^downloadKbps: an integer number of kbit\/s/),
      expect.stringMatching(/^uploadKbps:/),
    ]);
    expect(parseLimits([1])).toEqual({ problems: [expect.stringMatching(/expected/)] });
  });

  it('logins: names, passwords, ports and expiry checked', () => {
    expect(
      loginProblems({
        username: 'alice',
        password: 'alice-secret-1',
        ports: ['http'],
        expiresAt: '2030-01-01T00:00:00Z',
      }),
    ).toEqual([]);
    expect(loginProblems({ username: 'alice' })).toEqual([]);
    expect(
      loginProblems({
        username: 'Al ice',
        password: 'short',
        ports: ['ftp'],
        expiresAt: 'tomorrow',
        admin: true,
      }),
    ).toEqual([
      'admin: unknown field',
      expect.stringMatching(/^username:/),
      expect.stringMatching(/^password:/),
      expect.stringMatching(/^ports:/),
      expect.stringMatching(/^expiresAt:/),
    ]);
    expect(loginProblems({ username: 'alice', ports: ['http', 'http'] })).toEqual([
      expect.stringMatching(/^ports:/),
    ]);
    expect(loginProblems({ username: 'x:y' })).toEqual([expect.stringMatching(/^username:/)]);
    expect(isTimestamp('2030-01-01T00:00:00+02:00')).toBe(true);
    expect(isTimestamp('2030-01-01 00:00')).toBe(false);
    expect(isTimestamp('2030-13-45T00:00:00Z')).toBe(false);
  });

  it('expired logins are left out; the next expiry is the earliest still ahead', () => {
    const access: ProxyAccess = {
      logins: [
        { username: 'old', password: 'p'.repeat(12), ports: ['http'], expiresAtMs: 1_000 },
        { username: 'soon', password: 'p'.repeat(12), ports: ['http'], expiresAtMs: 5_000 },
        { username: 'later', password: 'p'.repeat(12), ports: ['http'], expiresAtMs: 9_000 },
        { username: 'never', password: 'p'.repeat(12), ports: ['http'], expiresAtMs: null },
      ],
      allowlist: [],
      limits: { downloadKbps: null, uploadKbps: null },
    };
    expect(liveLogins(access, 2_000).map((l) => l.username)).toEqual(['soon', 'later', 'never']);
    expect(nextExpiry(access, 2_000)).toBe(5_000);
    expect(nextExpiry(access, 9_000)).toBeNull();
  });
});

describe('kernel parts', () => {
  it('HTB at the limit with a burst of ~20 ms and a quantum in bounds', () => {
    expect(htbRate(8000)).toEqual([
      'rate',
      '8000kbit',
      'ceil',
      '8000kbit',
      'burst',
      '20000',
      'cburst',
      '20000',
      'quantum',
      '100000',
    ]);
    expect(htbRate(64)).toEqual([
      'rate',
      '64kbit',
      'ceil',
      '64kbit',
      'burst',
      '16384',
      'cburst',
      '16384',
      'quantum',
      '1600',
    ]);
    expect(htbCommands('wwan0', 500)[0]).toEqual([
      'qdisc',
      'add',
      'dev',
      'wwan0',
      'root',
      'handle',
      '1:',
      'htb',
      'default',
      '1',
    ]);
    expect(() => htbCommands('wwan0; rm', 500)).toThrow(/interface name/);
    expect(() => htbRate(0)).toThrow(/out of range/);
    expect(ifbName(7)).toBe('mfifb7');
  });

  it("the link's ingress passes pure ACKs (exact shapes, both protocols) and redirects the rest to the ifb", () => {
    const commands = ingressCommands('wwan0', 'mfifb0');
    const lines = commands.map((c) => c.join(' '));
    expect(lines[0]).toBe('qdisc add dev wwan0 handle ffff: ingress');
    expect(lines[1]).toBe('filter add dev wwan0 parent ffff: protocol ip prio 1 handle 1: u32 divisor 1');
    // IPv4 with timestamps: 20 + 32 bytes, TCP, not a fragment, data offset 8
    expect(lines).toContain(
      'filter add dev wwan0 parent ffff: protocol ip prio 1 u32 ht 1: match u16 0x34 0xffff at 2 ' +
        'match u8 0x45 0xff at 0 match u8 0x6 0xff at 9 match u16 0x0 0x3fff at 6 match u8 0x80 0xf0 at 32 flowid :1',
    );
    // IPv6: payload 32 bytes, next header TCP, data offset 8
    expect(lines).toContain(
      'filter add dev wwan0 parent ffff: protocol ipv6 prio 2 u32 ht 2: match u16 0x20 0xffff at 4 ' +
        'match u8 0x6 0xff at 6 match u8 0x80 0xf0 at 52 flowid :1',
    );
    // every TCP header length (5-15 words), each protocol; short packets are looked up, long ones not
    expect(lines.filter((l) => l.includes(' ht 1: ')).length).toBe(11);
    expect(lines.filter((l) => l.includes(' ht 2: ')).length).toBe(11);
    expect(lines).toContain(
      'filter add dev wwan0 parent ffff: protocol ip prio 1 u32 match u16 0x0 0xff80 at 2 link 1:',
    );
    expect(lines).toContain(
      'filter add dev wwan0 parent ffff: protocol ipv6 prio 2 u32 match u16 0x0 0xff80 at 4 link 2:',
    );
    // the redirect comes last, after both protocols' ACK filters
    expect(lines.at(-1)).toBe(
      'filter add dev wwan0 parent ffff: protocol all prio 3 u32 match u32 0 0 action mirred egress redirect dev mfifb0',
    );
    expect(() => ingressCommands('wwan0', 'mf ifb')).toThrow(/interface name/);
    // an ingress of the version before (the redirect alone) is not in place: it is made again
    const redirect =
      'filter protocol all pref 1 u32 chain 0 fh 800::800 order 2048 key ht 800 bkt 0 terminal flowid not_in_hw \n' +
      '\taction order 1: mirred (Egress Redirect to device mfifb0) stolen\n';
    expect(ingressInPlace(redirect, 'mfifb0')).toBe(false);
    const acks = (protocol: string, pref: number): string =>
      Array.from(
        { length: 11 },
        (_, i) =>
          `filter protocol ${protocol} pref ${pref} u32 chain 0 fh ${pref}::${800 + i} order ${2048 + i} key ht ${pref} bkt 0 *flowid :1 not_in_hw \n`,
      ).join('');
    expect(ingressInPlace(acks('ip', 1) + acks('ipv6', 2) + redirect, 'mfifb0')).toBe(true);
    expect(ingressInPlace(acks('ip', 1) + acks('ipv6', 2) + redirect, 'mfifb1')).toBe(false);
    // the same shapes on the egress of the link send ACKs to the HTB root's direct queue (1:0)
    const upload = uploadAckCommands('wwan0').map((c) => c.join(' '));
    expect(upload).toContain(
      'filter add dev wwan0 parent 1: protocol ip prio 1 u32 ht 1: match u16 0x34 0xffff at 2 ' +
        'match u8 0x45 0xff at 0 match u8 0x6 0xff at 9 match u16 0x0 0x3fff at 6 match u8 0x80 0xf0 at 32 flowid 1:0',
    );
    expect(upload.filter((l) => l.endsWith(' flowid 1:0')).length).toBe(22);
    expect(upload.some((l) => l.includes('mirred'))).toBe(false);
    // tc shows the classid 1:0 as `1:`; the ingress's shapes are not the upload's
    const direct = (protocol: string, pref: number): string =>
      acks(protocol, pref).replaceAll('*flowid :1 ', '*flowid 1: ');
    expect(uploadAcksInPlace(direct('ip', 1) + direct('ipv6', 2))).toBe(true);
    expect(uploadAcksInPlace(direct('ip', 1))).toBe(false);
    expect(uploadAcksInPlace(acks('ip', 1) + acks('ipv6', 2))).toBe(false);
    expect(ingressInPlace(direct('ip', 1) + direct('ipv6', 2) + redirect, 'mfifb0')).toBe(false);
  });

  it('the allowlist table redirects the listed IPv4 networks to the companions and refuses everyone else there', () => {
    const text = renderTable(
      accessListTable({
        slot: 3,
        allowlist: ['10.99.1.0/24', '2001:db8::/32'],
        httpPort: 21003,
        socksPort: 31003,
        openHttpPort: 23003,
        openSocksPort: 33003,
      }),
    );
    expect(text).toContain('table inet mf_access_3');
    expect(text).toContain('type nat hook prerouting priority dstnat');
    expect(text).toContain('type nat hook output priority -100');
    expect(text).toContain('ip saddr 10.99.1.0/24 fib daddr type local tcp dport 21003 redirect to :23003');
    expect(text).toContain('ip saddr 10.99.1.0/24 fib daddr type local tcp dport 31003 redirect to :33003');
    expect(text).toContain('ip6 saddr 2001:db8::/32 tcp dport { 23003, 33003 } accept');
    expect(text).toMatch(/tcp dport \{ 23003, 33003 \} reject with tcp reset/);
  });
});
