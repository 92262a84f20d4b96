import { describe, expect, it } from 'vitest';
import { addressProblem } from '../../src/net/addressGuard.js';

const context = {
  allowLoopback: false,
  otherModems: new Set(['100.64.1.7']),
  hostAddresses: new Set(['192.168.1.10', '203.0.113.5']),
};

describe('addressProblem: an address from a modem before it reaches ip rule', () => {
  it('accepts what a carrier gives: private, CGNAT and public addresses', () => {
    for (const ok of ['10.64.12.3', '100.64.1.8', '100.127.255.254', '37.80.1.2', '192.168.1.11'])
      expect(addressProblem(ok, context), ok).toBeNull();
  });

  it('refuses what no carrier gives, the host and other modems', () => {
    const refused: [string, RegExp][] = [
      ['0.0.0.0', /unspecified/],
      ['0.1.2.3', /unspecified/],
      ['255.255.255.255', /broadcast/],
      ['224.0.0.1', /multicast/],
      ['239.255.255.250', /multicast/],
      ['240.0.0.1', /reserved/],
      ['127.0.0.1', /loopback/],
      ['127.0.10.2', /loopback/],
      ['169.254.1.1', /link-local/],
      ['100.64.1.7', /another modem/],
      ['192.168.1.10', /this host/],
      ['203.0.113.5', /this host/],
      ['fd00::1', /not an IPv4 address/],
      ['10.0.0.1; reboot', /not an IPv4 address/],
      ['', /not an IPv4 address/],
    ];
    for (const [address, problem] of refused)
      expect(addressProblem(address, context), address).toMatch(problem);
  });

  it('loopback only where the data plane runs without routing (the demo)', () => {
    expect(addressProblem('127.0.10.2', { ...context, allowLoopback: true })).toBeNull();
    expect(addressProblem('224.0.0.1', { ...context, allowLoopback: true })).toMatch(/multicast/);
  });
});
