import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { FAST_MODEM, labSupervisor } from '../helpers/farm.js';
import { EGRESS_TABLE } from '../../src/net/egressPolicy.js';
import { run, spawnChild, type Child } from '../../src/process/run.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { LabWwan } from '../../src/sim/lab/labWwan.js';
import { MANAGEMENT_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { labDataPlane, labEgress } from '../helpers/labDataPlane.js';
import { until } from '../helpers/until.js';

/**
 * Issue 18: what a proxy customer can reach, in the lab (root only). Through every port (SOCKS5 and
 * HTTP) the lab's internet (the echo server, `dataPlane.egressPolicy.allow`) answers, and none of
 * these do, over IPv4 or IPv6: the farm's loopback (where the inspector and PostgreSQL listen), the
 * farm's own management address, the management network behind it (RFC 1918, and an IPv6 ULA
 * reached through the farm's own IPv6 uplink), another modem's proxy port. Every listener answers
 * root, and the loopback one answers through a port while the policy is removed: the refusals are
 * the policy's. Every proxy runs under its own uid with no capabilities and no secret in its
 * environment.
 */

const N = 2;
const echoScript = fileURLToPath(new URL('../../src/sim/lab/echoServer.ts', import.meta.url));
const MGMT_GATEWAY = '192.168.77.1';
const MGMT6_FARM = 'fd77::2';
const MGMT6_GATEWAY = 'fd77::1';
const PORT = 9107;
const SECRET = `token-${randomBytes(12).toString('hex')}`;
const savedEnv = { token: process.env['MODEMFLEET_API_TOKEN'], url: process.env['DATABASE_URL'] };

let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
let wwan: LabWwan;
let supervisor: Supervisor;
const listeners: Child[] = [];

interface Port {
  imei: string;
  wanIp: string;
  httpPort: number;
  socksPort: number;
  user: string;
  password: string;
  slot: number;
}

const ports = async (): Promise<Port[]> =>
  (
    await db.sql<
      {
        imei: string;
        wan_ip: string;
        http_port: number;
        socks_port: number;
        proxy_user: string;
        proxy_password: string;
        slot: number;
      }[]
    >`select m.imei, host(m.wan_ip) as wan_ip, a.http_port, a.socks_port, a.proxy_user, a.proxy_password, a.slot
      from modems m join allocations a using (imei) where m.state = 'online' order by a.slot`
  ).map((r) => ({
    imei: r.imei,
    wanIp: r.wan_ip,
    httpPort: r.http_port,
    socksPort: r.socks_port,
    user: r.proxy_user,
    password: r.proxy_password,
    slot: r.slot,
  }));

/** An echo server inside a namespace, on one address (IPv4 or IPv6). */
async function listen(ns: string, host: string, port: number): Promise<void> {
  const child = spawnChild(
    'ip',
    ['netns', 'exec', ns, process.execPath, '--import', 'tsx', echoScript, host, String(port)],
    {
      detached: true,
      cleanup: false,
      stdout: 'pipe',
    },
  );
  listeners.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    void child.then(() => reject(new Error(`echo on ${host}:${port} in ${ns} did not start`)));
  });
}

/** `http://host:port/` with IPv6 in brackets. */
const url = (host: string, port: number): string =>
  `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;

/** What a customer gets through one port of the farm for `target` (curl inside the farm namespace). */
async function ask(kind: 'socks' | 'http', p: Port, target: string): Promise<{ code: string; body: string }> {
  const proxy =
    kind === 'socks'
      ? `socks5://${p.user}:${p.password}@127.0.0.1:${p.socksPort}`
      : `http://${p.user}:${p.password}@127.0.0.1:${p.httpPort}`;
  const r = await net.inFarm([
    'curl',
    '-sS',
    '--max-time',
    '4',
    '-o',
    '-',
    '-w',
    '\n%{http_code}',
    '-x',
    proxy,
    target,
  ]);
  const out = r.stdout.trim().split('\n');
  return { code: out.at(-1) ?? '', body: out.slice(0, -1).join('\n').trim() };
}

/** The echo server's answer through the port (the source address it saw), or null when not reached. */
async function through(kind: 'socks' | 'http', p: Port, target: string): Promise<string | null> {
  const r = await ask(kind, p, target);
  return r.code === '200' ? r.body : null;
}

/**
 * Another modem's HTTP port answers a request that reaches it with 407 (it wants its own
 * credentials); a port that could not connect answers 500 (tinyproxy) or nothing (microsocks).
 */
async function reachesProxy(kind: 'socks' | 'http', p: Port, target: string): Promise<boolean> {
  return (await ask(kind, p, target)).code === '407';
}

/** Straight from a namespace as root (no proxy): the listener itself answers. */
async function direct(ns: string, target: string): Promise<boolean> {
  const r = await run(
    'ip',
    ['netns', 'exec', ns, 'curl', '-sS', '--max-time', '4', '-o', '/dev/null', '-w', '%{http_code}', target],
    {
      timeoutMs: 10_000,
    },
  );
  return r.stdout.trim() === '200';
}

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-egress-'));
  await chmod(dir, 0o711); // the proxies' own uids read their configs below it
  net = new NetLab({ name: `mf${randomBytes(2).toString('hex')}`, modems: N });
  await net.start();
  // an IPv6 uplink beside the IPv4 one: the farm's own IPv6 default route goes to the management side
  await net.carrierIp(['addr', 'add', `${MGMT6_GATEWAY}/64`, 'dev', 'mgmtc', 'nodad']);
  await net.farmIp(['addr', 'add', `${MGMT6_FARM}/64`, 'dev', 'mgmt0', 'nodad']);
  await net.farmIp(['-6', 'route', 'add', 'default', 'via', MGMT6_GATEWAY, 'dev', 'mgmt0']);
  // what must stay out of reach: the farm's loopback (IPv4, IPv6), its own management address,
  // the management network's gateway (IPv4, IPv6)
  await listen(net.farm, '127.0.0.1', PORT);
  await listen(net.farm, '::1', PORT);
  await listen(net.farm, MANAGEMENT_ADDRESS, PORT);
  await listen(net.carrier, MGMT_GATEWAY, PORT);
  await listen(net.carrier, MGMT6_GATEWAY, PORT);
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 57).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
  wwan = new LabWwan(net, lab);
  await wwan.start();
  // secrets in the supervisor's own environment, which no child may inherit
  process.env['MODEMFLEET_API_TOKEN'] = SECRET;
  process.env['DATABASE_URL'] = db.url;
  supervisor = new Supervisor(
    labSupervisor(new Store({ sql: db.sql, url: db.url, hostId: 'egress-host' }), lab, join(dir, 'state'), {
      modem: { ...FAST_MODEM, signalPollMs: 1_000, detachMs: 200 },
      link: { presencePollMs: 100, addressPollMs: 50, wwan },
      // the lab's internet is one address of the benchmarking block (refused by default)
      dataPlane: labDataPlane(net, join(dir, 'run'), { egress: labEgress(net, 5_000) }),
    }),
  );
  await supervisor.start();
}, 60_000);

afterAll(async () => {
  await supervisor?.stop();
  for (const [name, value] of [
    ['MODEMFLEET_API_TOKEN', savedEnv.token],
    ['DATABASE_URL', savedEnv.url],
  ] as const)
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  for (const child of listeners)
    if (child.pid)
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // gone
      }
  await wwan?.stop();
  await lab?.stop();
  await net?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
  const left = await execa('pgrep', ['-f', dir], { reject: false });
  expect(left.stdout).toBe('');
});

describe.runIf(process.getuid?.() === 0)('the egress policy in the lab', () => {
  it('every port reaches the internet and nothing of the host, its networks or another port', async () => {
    await until(async () => (await ports()).length === N, 30_000, 'modems online');
    let online: Port[] = [];
    await until(
      async () => {
        online = await ports();
        const seen = await Promise.all(online.map((p) => through('socks', p, net.echoUrl)));
        return seen.every((s, i) => s === online[i]?.wanIp);
      },
      20_000,
      'every port answers',
    );
    // the listeners answer root: a refusal below is the policy's, not a dead listener
    for (const target of [url('127.0.0.1', PORT), url('::1', PORT), url(MANAGEMENT_ADDRESS, PORT)])
      expect(await direct(net.farm, target), target).toBe(true);
    expect(await direct(net.farm, url(MGMT_GATEWAY, PORT))).toBe(true);
    expect(await direct(net.farm, url(MGMT6_GATEWAY, PORT))).toBe(true);

    for (const p of online) {
      const other = online.find((o) => o !== p)!;
      const forbidden = [
        url('127.0.0.1', PORT), // the farm's loopback: the inspector, PostgreSQL
        url('::1', PORT),
        url(MANAGEMENT_ADDRESS, PORT), // an address of the host itself
        url(MGMT_GATEWAY, PORT), // the management network (RFC 1918), the host's uplink
        url(MGMT6_GATEWAY, PORT), // IPv6 through the host's own uplink
      ];
      // another modem's port, on loopback, on that modem's address and on IPv6 loopback
      const otherPorts = [
        url('127.0.0.1', other.httpPort),
        url(other.wanIp, other.httpPort),
        url('::1', other.httpPort),
      ];
      for (const kind of ['socks', 'http'] as const) {
        expect(await through(kind, p, net.echoUrl), `${kind} ${p.imei} → internet`).toBe(p.wanIp);
        for (const target of forbidden)
          expect(await through(kind, p, target), `${kind} ${p.imei} → ${target}`).toBeNull();
        for (const target of otherPorts)
          expect(await reachesProxy(kind, p, target), `${kind} ${p.imei} → ${target}`).toBe(false);
      }
    }
  }, 120_000);

  it('without the policy the same port reaches the loopback and the management network: the refusal was the policy', async () => {
    const [p, other] = await ports();
    const saved = await run('ip', ['netns', 'exec', net.farm, 'nft', 'list', 'table', 'inet', EGRESS_TABLE]);
    expect(saved.ok).toBe(true);
    await run('ip', ['netns', 'exec', net.farm, 'nft', 'delete', 'table', 'inet', EGRESS_TABLE]);
    try {
      // microsocks binds to the modem's address, yet the local table still delivers to the host
      expect(await through('socks', p!, url('127.0.0.1', PORT))).not.toBeNull();
      // and microsocks ignores -b for IPv6: out through the host's own uplink
      expect(await through('socks', p!, url(MGMT6_GATEWAY, PORT))).toBe(MGMT6_FARM);
      expect(await reachesProxy('socks', p!, url('127.0.0.1', other!.httpPort))).toBe(true);
      expect(await reachesProxy('http', p!, url(other!.wanIp, other!.httpPort))).toBe(true);
    } finally {
      const restored = await run('ip', ['netns', 'exec', net.farm, 'nft', '-f', '-'], {
        input: saved.stdout,
      });
      expect(restored.ok).toBe(true);
    }
    expect(await through('socks', p!, url('127.0.0.1', PORT))).toBeNull();
  }, 60_000);

  it('every proxy runs under its modem’s uid with no capabilities and no secret in its environment', async () => {
    const online = await ports();
    let checked = 0;
    for (const p of online) {
      const modem = [...supervisor.modems.values()].find((m) => m.imei === p.imei);
      const pids = modem?.proxyPids ?? [];
      expect(pids).toHaveLength(2); // microsocks and tinyproxy
      for (const pid of pids) {
        const status = await readFile(`/proc/${pid}/status`, 'utf8');
        const uid = 61_000 + p.slot;
        expect(status).toMatch(new RegExp(`^Uid:\\s+${uid}\\s+${uid}\\s+${uid}\\s+${uid}$`, 'm'));
        expect(status).toMatch(new RegExp(`^Gid:\\s+${uid}\\s`, 'm'));
        for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb', 'CapBnd'])
          expect(status).toMatch(new RegExp(`^${set}:\\s+0{16}$`, 'm'));
        expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
        const environ = (await readFile(`/proc/${pid}/environ`, 'utf8')).split('\0').filter(Boolean);
        expect(environ.some((e) => e.startsWith('PATH='))).toBe(true);
        expect(
          environ.filter(
            (e) =>
              /^(MODEMFLEET_|DATABASE_URL|PG)/.test(e) || e.includes(SECRET) || e.includes('postgres://'),
          ),
        ).toEqual([]);
        checked++;
      }
    }
    expect(checked).toBe(2 * N);
  }, 30_000);
});
