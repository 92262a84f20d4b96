import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTable } from '../../src/net/nft.js';
import { microsocksArgs } from '../../src/net/proxyConfig.js';
import { ProxyProcess } from '../../src/net/proxyProcess.js';
import { applyRoute } from '../../src/net/routing.js';
import { CARRIER_NAT_TABLE } from '../../src/sim/lab/carrierNat.js';
import { NetLab } from '../../src/sim/lab/netLab.js';

/**
 * The lab's carrier NATs like a mobile carrier: the echo server sees an address of the carrier's
 * pool, never the modem's private one; modems share public addresses; a pool of one hands every
 * modem the same address; NAT off shows the private addresses again.
 */

const root = process.getuid?.() === 0;
const N = 3;
const POOL = ['203.0.113.21', '203.0.113.22'];
const ONE = ['203.0.113.99'];
const address = (i: number): string => `100.65.${i + 1}.20`;

let lab: NetLab;
let dir: string;
let socks: ProxyProcess | undefined;

const seenByAll = async (): Promise<(string | null)[]> => {
  const seen: (string | null)[] = [];
  for (let i = 0; i < N; i++) seen.push(await lab.seenFrom(address(i)));
  return seen;
};

describe.runIf(root)('carrier NAT in the lab', () => {
  beforeAll(async () => {
    lab = new NetLab({ name: `mc${randomBytes(2).toString('hex')}`, modems: N, nat: { pool: POOL } });
    await lab.start();
    dir = await mkdtemp(join(tmpdir(), 'mf-nat-'));
    for (let i = 0; i < N; i++)
      await applyRoute(
        {
          iface: lab.iface(i),
          address: address(i),
          prefix: 24,
          gateway: null,
          table: 10_001 + i,
          priority: 1_001 + i * 2,
        },
        { netns: lab.farm },
      );
  }, 60_000);
  afterAll(async () => {
    await socks?.stop();
    await lab?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the echo server sees a pool address, sticky per private address; two modems share one', async () => {
    expect(lab.natPool).toEqual(POOL);
    const seen = await seenByAll();
    for (const [i, s] of seen.entries()) {
      expect(POOL).toContain(s);
      expect(lab.inNatPool(s ?? '')).toBe(true);
      expect(s).not.toBe(address(i));
    }
    // the same private address keeps its public one, connection after connection
    expect(await seenByAll()).toEqual(seen);
    // three modems, two public addresses: at least two modems share one (and both are answered)
    const shared = POOL.find((p) => seen.filter((s) => s === p).length >= 2);
    expect(shared).toBeDefined();
    const state = await readTable('ip', CARRIER_NAT_TABLE, { netns: lab.carrier });
    expect(state?.rules.map((r) => r.comment)).toEqual(['carrier nat']);
  }, 60_000);

  it('a proxy port bound to the modem address shows the public address too', async () => {
    const spec = {
      imei: '866834040000017',
      listen: '127.0.0.1',
      httpPort: 21_001,
      socksPort: 31_001,
      user: 'm0',
      password: 'secret-pass-0',
      egress: address(0),
      dns: [],
    };
    socks = new ProxyProcess({
      name: 'm0-socks',
      argv: ['microsocks', ...microsocksArgs(spec)],
      netns: lab.farm,
      runDir: dir,
      ports: [{ host: '127.0.0.1', port: spec.socksPort }],
    });
    await socks.start();
    const viaPort = await lab.probe('socks', spec.socksPort, spec.user, spec.password);
    expect(viaPort).toBe(await lab.seenFrom(address(0)));
    expect(lab.inNatPool(viaPort ?? '')).toBe(true);
  }, 30_000);

  it('a pool of one address: the carrier hands every modem the same public address', async () => {
    await lab.setNatPool(ONE);
    expect(lab.natPool).toEqual(ONE);
    expect(lab.inNatPool(POOL[0] ?? '')).toBe(false);
    expect(await seenByAll()).toEqual(Array<string>(N).fill(ONE[0] ?? ''));
    // the old pool's local routes are gone, the new one's is there
    const local = await lab.carrierIp(['route', 'show', 'table', 'local', 'dev', 'lo']);
    expect(local).toContain(ONE[0]);
    for (const a of POOL) expect(local).not.toContain(a);
  }, 30_000);

  it('NAT off shows the private addresses again; on again, the pool', async () => {
    await lab.setNatPool(null);
    expect(lab.natPool).toBeNull();
    expect(lab.inNatPool(ONE[0] ?? '')).toBe(false);
    expect(await seenByAll()).toEqual(Array.from({ length: N }, (_, i) => address(i)));
    expect(await readTable('ip', CARRIER_NAT_TABLE, { netns: lab.carrier })).toBeNull();
    expect(await lab.carrierIp(['route', 'show', 'table', 'local', 'dev', 'lo'])).not.toContain(ONE[0]);

    await lab.setNatPool(POOL);
    for (const s of await seenByAll()) expect(POOL).toContain(s);
  }, 30_000);
});
