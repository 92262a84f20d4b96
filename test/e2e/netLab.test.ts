import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { microsocksArgs, renderTinyproxy, type ProxySpec } from '../../src/net/proxyConfig.js';
import { ProxyProcess } from '../../src/net/proxyProcess.js';
import { applyRoute, removeRoute, type ModemRoute } from '../../src/net/routing.js';
import { MANAGEMENT_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';

/**
 * The data plane on real routing and real proxies in network namespaces: each modem's ports egress
 * from its own address, a missing route fails closed (the management address is never seen), and
 * the lab itself shows a leak when there is one.
 */

let lab: NetLab;
let dir: string;
const procs: ProxyProcess[] = [];

beforeAll(async () => {
  lab = new NetLab({ name: `mf${randomBytes(2).toString('hex')}`, modems: 3 });
  await lab.start();
  dir = await mkdtemp(join(tmpdir(), 'mf-lab-'));
}, 30_000);
afterAll(async () => {
  for (const p of procs) await p.stop();
  await lab.stop();
  await rm(dir, { recursive: true, force: true });
});

const route = (i: number, address: string): ModemRoute => ({
  iface: lab.iface(i),
  address,
  prefix: 24,
  gateway: null,
  table: 10_001 + i,
  priority: 1_001 + i * 2,
});

const spec = (i: number, egress: string): ProxySpec => ({
  imei: '866834040000017',
  listen: '0.0.0.0',
  httpPort: 21_001 + i,
  socksPort: 31_001 + i,
  user: `m${i}`,
  password: `secret-pass-${i}`,
  egress,
  dns: [],
});

async function proxies(i: number, egress: string): Promise<void> {
  const s = spec(i, egress);
  const socks = new ProxyProcess({
    name: `m${i}-socks`,
    argv: ['microsocks', ...microsocksArgs(s)],
    netns: lab.farm,
    runDir: dir,
    ports: [{ host: '127.0.0.1', port: s.socksPort }],
  });
  const conf = join(dir, `m${i}.conf`);
  await writeFile(conf, renderTinyproxy(s));
  const http = new ProxyProcess({
    name: `m${i}-http`,
    argv: ['tinyproxy', '-d', '-c', conf],
    netns: lab.farm,
    runDir: dir,
    ports: [{ host: '127.0.0.1', port: s.httpPort }],
  });
  procs.push(socks, http);
  await socks.start();
  await http.start();
}

describe('data plane lab (namespaces, real routing, real proxies)', () => {
  it('every port egresses through its own modem link, and a missing route fails closed', async () => {
    const addresses = ['100.65.1.20', '100.65.2.30', '100.65.3.40'];
    for (const [i, a] of addresses.entries()) {
      await applyRoute(route(i, a), { netns: lab.farm });
      await proxies(i, a);
    }
    for (const [i, a] of addresses.entries()) {
      expect(await lab.probe('socks', 31_001 + i, `m${i}`, `secret-pass-${i}`)).toBe(a);
      expect(await lab.probe('http', 21_001 + i, `m${i}`, `secret-pass-${i}`)).toBe(a);
    }
    // modem 1's route is deleted by hand: its ports fail, they never show another address
    await lab.farmIp(['route', 'del', 'default', 'dev', lab.iface(1), 'table', '10002']);
    expect(await lab.probe('socks', 31_002, 'm1', 'secret-pass-1')).toBeNull();
    // its rule gone as well: the carrier drops packets from its address on the management link
    await removeRoute(route(1, addresses[1] ?? ''), { netns: lab.farm });
    expect(await lab.probe('socks', 31_002, 'm1', 'secret-pass-1')).toBeNull();
    await applyRoute(route(1, addresses[1] ?? ''), { netns: lab.farm });
    expect(await lab.probe('socks', 31_002, 'm1', 'secret-pass-1')).toBe(addresses[1]);
  }, 60_000);

  it('the lab shows a leak: a proxy not bound to its modem egresses from the management address', async () => {
    const leaky = new ProxyProcess({
      name: 'leaky',
      argv: ['microsocks', '-i', '0.0.0.0', '-p', '31099', '-u', 'x1', '-P', 'secret-pass-x'],
      netns: lab.farm,
      runDir: dir,
      ports: [{ host: '127.0.0.1', port: 31_099 }],
    });
    procs.push(leaky);
    await leaky.start();
    expect(await lab.probe('socks', 31_099, 'x1', 'secret-pass-x')).toBe(MANAGEMENT_ADDRESS);
  }, 30_000);
});
