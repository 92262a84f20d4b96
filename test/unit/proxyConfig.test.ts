import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  checkProxySpec,
  microsocksArgs,
  openMicrosocksArgs,
  render3proxy,
  renderOpenTinyproxy,
  renderTinyproxy,
  type ProxySpec,
} from '../../src/net/proxyConfig.js';

const spec: ProxySpec = {
  imei: '866834040000017',
  listen: '0.0.0.0',
  httpPort: 21003,
  socksPort: 31003,
  user: 'm3',
  password: 'Zq7-x_9PkLm2',
  egress: '10.64.12.7',
  dns: ['1.1.1.1', '9.9.9.9'],
  logFile: '/var/lib/modemfleet/proxy/866834040000017.log',
};

const golden = (name: string) => readFile(join(import.meta.dirname, '..', 'fixtures', 'proxy', name), 'utf8');

describe('proxy configuration', () => {
  it('3proxy: golden file (auth strong, user, ports, -i and -e)', async () => {
    expect(render3proxy(spec)).toBe(await golden('3proxy.cfg'));
  });

  it('tinyproxy: golden file (Port, Listen, Bind, BasicAuth)', async () => {
    expect(renderTinyproxy(spec)).toBe(await golden('tinyproxy.conf'));
  });

  it('microsocks: argument array bound to the egress address', () => {
    expect(microsocksArgs(spec)).toEqual([
      '-i',
      '0.0.0.0',
      '-p',
      '31003',
      '-b',
      '10.64.12.7',
      '-u',
      'm3',
      '-P',
      'Zq7-x_9PkLm2',
    ]);
  });

  it('3proxy: the egress policy as a second wall (allowlist, refused blocks, then the user)', () => {
    const text = render3proxy({
      ...spec,
      egressPolicy: { allow: ['198.18.0.1', '2001:db8:1::/48'], deny: ['203.0.113.0/24'] },
    });
    const acl = text.split('\n').filter((l) => /^(allow|deny) /.test(l));
    expect(acl).toEqual([
      'allow m3 * 198.18.0.1,2001:db8:1::/48',
      'deny * * 0.0.0.0/8,10.0.0.0/8,100.64.0.0/10,127.0.0.0/8,169.254.0.0/16,172.16.0.0/12,192.0.0.0/24,192.168.0.0/16,198.18.0.0/15,224.0.0.0/4,240.0.0.0/4,203.0.113.0/24',
      'deny * * ::,::1,::ffff:0:0/96,64:ff9b:1::/48,100::/64,fc00::/7,fe80::/10,ff00::/8',
      'allow m3',
    ]);
    // the ACL comes after the users and before the services that use it
    expect(text.indexOf('users m3:CL:')).toBeLessThan(text.indexOf('allow m3 *'));
    expect(text.indexOf('allow m3\n')).toBeLessThan(text.indexOf('proxy -p21003'));
    // the demo: only its simulated internet
    const demo = render3proxy({ ...spec, egressPolicy: { allow: ['127.0.0.2'], deny: [], internet: false } });
    expect(demo.split('\n').filter((l) => /^(allow|deny) /.test(l))).toEqual([
      'allow m3 * 127.0.0.2',
      expect.stringMatching(/^deny \* \* 0\.0\.0\.0\/8,.*127\.0\.0\.0\/8/),
      expect.stringMatching(/^deny \* \* ::,::1,/),
      'deny *',
    ]);
    expect(() => render3proxy({ ...spec, egressPolicy: { allow: ['127.0.0.1 *'], deny: [] } })).toThrow(
      /egressPolicy\.allow\[0\]/,
    );
  });

  it.each([
    [{ egress: '10.0.0.1\nadmin 0.0.0.0' }, /egress: not an IPv4/],
    [{ user: 'a b' }, /user:/],
    [{ password: 'pw"; include /etc/shadow' }, /password:/],
    [{ user: 'x:CL:y' }, /user:/],
    [{ httpPort: 70000 }, /httpPort/],
    [{ socksPort: 21003 }, /socksPort: must differ/],
    [{ dns: ['8.8.8.8 # comment'] }, /dns/],
    [{ logFile: '/tmp/a b' }, /logFile/],
    [{ imei: '$include' }, /imei/],
  ])('refuses %o before anything is written', (bad, message) => {
    const s = { ...spec, ...bad };
    expect(checkProxySpec(s).join('; ')).toMatch(message);
    expect(() => render3proxy(s)).toThrow(message);
    expect(() => renderTinyproxy(s)).toThrow(message);
    expect(() => microsocksArgs(s)).toThrow(message);
  });
});

describe('proxy configuration with more logins, an allowlist and speed limits', () => {
  const more: ProxySpec = {
    ...spec,
    logins: [
      { user: 'alice', password: 'alice-secret-1', ports: ['http', 'socks'] },
      { user: 'bob-2', password: 'bob-secret-22', ports: ['http'] },
    ],
  };

  it('3proxy: one users line per login; the HTTP and SOCKS services get their own ACL when their logins differ', () => {
    const lines = render3proxy(more).split('\n');
    expect(lines.filter((l) => l.startsWith('users '))).toEqual([
      'users m3:CL:Zq7-x_9PkLm2',
      'users alice:CL:alice-secret-1',
      'users bob-2:CL:bob-secret-22',
    ]);
    expect(lines).toContain('auth strong');
    const proxy = lines.indexOf('proxy -p21003 -i0.0.0.0 -e10.64.12.7');
    const flush = lines.indexOf('flush');
    const socks = lines.indexOf('socks -p31003 -i0.0.0.0 -e10.64.12.7');
    expect(lines.slice(0, proxy)).toContain('allow m3,alice,bob-2');
    expect(proxy).toBeLessThan(flush);
    expect(lines.slice(flush, socks)).toEqual(['flush', 'allow m3,alice']);
    // the same logins on both: one ACL, no flush (the golden file's shape)
    const same = render3proxy({
      ...spec,
      logins: [{ user: 'alice', password: 'alice-secret-1', ports: ['http', 'socks'] }],
    });
    expect(same).not.toContain('flush');
    expect(same).toContain('allow m3,alice\nproxy -p21003');
  });

  it('3proxy: an allowlist lets the listed networks in without a login (auth iponly strong), behind the refused blocks', () => {
    const text = render3proxy({
      ...more,
      allowlist: ['203.0.113.0/24', '2001:db8::/32'],
      egressPolicy: { allow: ['198.18.0.1'], deny: [] },
    });
    const lines = text.split('\n');
    expect(lines).toContain('auth iponly strong');
    expect(lines).not.toContain('auth strong');
    const acl = lines.slice(0, lines.indexOf('flush')).filter((l) => /^(allow|deny) /.test(l));
    expect(acl).toEqual([
      'allow m3,alice,bob-2 * 198.18.0.1',
      'allow * 203.0.113.0/24,2001:db8::/32 198.18.0.1',
      expect.stringMatching(/^deny \* \* 0\.0\.0\.0\/8,/),
      expect.stringMatching(/^deny \* \* ::,/),
      'allow m3,alice,bob-2',
      'allow * 203.0.113.0/24,2001:db8::/32',
    ]);
    // without the egress policy: the logins, then the networks
    const plain = render3proxy({ ...spec, allowlist: ['10.9.0.0/16'] }).split('\n');
    expect(plain.filter((l) => l.startsWith('allow '))).toEqual(['allow m3', 'allow * 10.9.0.0/16']);
  });

  it('3proxy: bandlimin (download) and bandlimout (upload) in bits per second, shared by every client', () => {
    const text = render3proxy({ ...spec, bandwidth: { downloadKbps: 8000, uploadKbps: 2000 } });
    const lines = text.split('\n');
    expect(lines).toContain('bandlimin 8000000 *');
    expect(lines).toContain('bandlimout 2000000 *');
    expect(lines.indexOf('bandlimin 8000000 *')).toBeLessThan(
      lines.indexOf('proxy -p21003 -i0.0.0.0 -e10.64.12.7'),
    );
    const downOnly = render3proxy({ ...spec, bandwidth: { downloadKbps: 500, uploadKbps: null } });
    expect(downOnly).toContain('bandlimin 500000 *');
    expect(downOnly).not.toContain('bandlimout');
    expect(render3proxy(spec)).not.toContain('bandlim');
  });

  it('tinyproxy: one BasicAuth line per HTTP login; the password-less companion has Allow lines and no BasicAuth', () => {
    const text = renderTinyproxy(more);
    expect(text.split('\n').filter((l) => l.startsWith('BasicAuth'))).toEqual([
      'BasicAuth m3 Zq7-x_9PkLm2',
      'BasicAuth alice alice-secret-1',
      'BasicAuth bob-2 bob-secret-22',
    ]);
    const socksOnly = renderTinyproxy({
      ...spec,
      logins: [{ user: 'carol', password: 'carol-secret-1', ports: ['socks'] }],
    });
    expect(socksOnly).not.toContain('carol');
    const open = renderOpenTinyproxy({ ...more, allowlist: ['203.0.113.0/24', '10.1.2.3/32'] }, 23003);
    const lines = open.split('\n');
    expect(lines).toContain('Port 23003');
    expect(lines).toContain('Bind 10.64.12.7');
    expect(lines.filter((l) => l.startsWith('Allow '))).toEqual([
      'Allow 203.0.113.0/24',
      'Allow 10.1.2.3/32',
    ]);
    expect(open).not.toContain('BasicAuth');
    expect(open).not.toContain('secret');
    expect(() => renderOpenTinyproxy(more, 23003)).toThrow(/needs an allowlist/);
    expect(() => renderOpenTinyproxy({ ...more, allowlist: ['10.0.0.0/8'] }, 21003)).toThrow(/open port/);
    expect(openMicrosocksArgs({ ...more, allowlist: ['10.0.0.0/8'] }, 33003)).toEqual([
      '-i',
      '0.0.0.0',
      '-p',
      '33003',
      '-b',
      '10.64.12.7',
    ]);
  });

  it.each([
    [{ logins: [{ user: 'a b', password: 'alice-secret-1', ports: ['http'] }] }, /logins\[0\]\.user/],
    [{ logins: [{ user: 'alice', password: 'x:CL:y', ports: ['http'] }] }, /logins\[0\]\.password/],
    [{ logins: [{ user: 'm3x', password: 'alice-secret-1', ports: [] }] }, /logins\[0\]\.ports/],
    [
      {
        logins: [
          { user: 'alice', password: 'alice-secret-1', ports: ['http'] },
          { user: 'alice', password: 'alice-secret-2', ports: ['http'] },
        ],
      },
      /logins\[1\]\.user: used twice/,
    ],
    [{ allowlist: ['10.0.0.1/8'] }, /allowlist\[0\]/],
    [{ allowlist: ['10.0.0.0/8 *'] }, /allowlist\[0\]/],
    [{ bandwidth: { downloadKbps: 1.5, uploadKbps: null } }, /bandwidth\.downloadKbps/],
  ] as [Partial<ProxySpec>, RegExp][])('refuses %o', (bad, message) => {
    const s: ProxySpec = { ...spec, ...bad };
    expect(checkProxySpec(s).join('; ')).toMatch(message);
    expect(() => render3proxy(s)).toThrow(message);
    expect(() => renderTinyproxy(s)).toThrow(message);
  });
});
