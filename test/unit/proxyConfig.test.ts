import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  checkProxySpec,
  microsocksArgs,
  render3proxy,
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
