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
