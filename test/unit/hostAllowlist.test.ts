import { describe, expect, it } from 'vitest';
import { HostAllowlist, hostName } from '../../src/inspector/hostAllowlist.js';

const NO_INTERFACES = (): string[] => [];

describe('HostAllowlist (the DNS rebinding check)', () => {
  it('allows loopback names and addresses and the listen address by default, ports ignored', () => {
    const list = new HostAllowlist('192.0.2.7', [], NO_INTERFACES);
    for (const host of [
      'localhost',
      'LOCALHOST:8080',
      'app.localhost',
      '127.0.0.1',
      '127.3.4.5:80',
      '[::1]:8080',
      '192.0.2.7:8080',
      'localhost.',
    ])
      expect(list.allows(host), host).toBe(true);
    for (const host of [
      'evil.example',
      'localhost.evil.example',
      '192.0.2.8',
      '[::2]',
      'a b',
      '',
      '127.0.0.1.nip.io',
    ])
      expect(list.allows(host), host).toBe(false);
    expect(list.allows(undefined)).toBe(true); // HTTP/1.0 without Host: no browser sends that
  });

  it('a wildcard listen address allows every interface address; configured names and domains are added', () => {
    const list = new HostAllowlist('0.0.0.0', ['farm.example.com', '*.lan.example'], () => [
      '10.1.2.3',
      'fe80::1',
    ]);
    for (const host of [
      '10.1.2.3:8080',
      '[fe80::1]',
      'farm.example.com',
      'a.lan.example',
      'b.c.lan.example:1',
    ])
      expect(list.allows(host), host).toBe(true);
    for (const host of ['lan.example', 'x.farm.example.com', '10.1.2.4'])
      expect(list.allows(host), host).toBe(false);
    expect(new HostAllowlist('127.0.0.1', ['*']).allows('anything.example')).toBe(true);
  });

  it('hostName strips the port and brackets and refuses what is not a host', () => {
    expect(hostName('Example.COM:443')).toBe('example.com');
    expect(hostName('[2001:db8::1]:8080')).toBe('2001:db8::1');
    expect(hostName('a/b')).toBeUndefined();
    expect(hostName('x'.repeat(300))).toBeUndefined();
  });
});
