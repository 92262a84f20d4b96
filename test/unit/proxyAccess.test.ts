import { describe, expect, it } from 'vitest';
import { accessListTable } from '../../src/net/accessList.js';
import { renderTable } from '../../src/net/nftRuleset.js';
import { htbCommands, htbRate, ifbName } from '../../src/net/shaping.js';
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
