import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { Inspector } from '../../src/inspector/inspector.js';
import { ifbName, readShaping } from '../../src/net/shaping.js';
import { run, spawnChild, type Child } from '../../src/process/run.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { LabWwan } from '../../src/sim/lab/labWwan.js';
import { ECHO_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { FAST_MODEM, TOKEN, labSupervisor } from '../helpers/farm.js';
import { labDataPlane, labEgress } from '../helpers/labDataPlane.js';
import { until } from '../helpers/until.js';

/**
 * Issue 19 items 3 and 4 in the lab (root only), with real microsocks and tinyproxy processes, the
 * kernel's tc and nftables, in network namespaces, driven through the HTTP API:
 * - a speed limit holds within 10 % over a 10 s transfer, both ways, and a changed limit applies to
 *   a running transfer (no proxy restart);
 * - a client from an allowlisted network gets through both ports without a password, an unlisted one
 *   does not (and still does with the password);
 * - a second login works on tinyproxy, a SOCKS login is refused on microsocks (409), removing the
 *   login refuses it at once, an expired one stops at its expiry, and another login's open tunnel
 *   lives through all of it.
 */

const N = 2;
const BULK_PORT = 9300;
const HOLD_PORT = 9301;
const ALLOWED_CLIENT = '10.99.1.1';
const OTHER_CLIENT = '10.99.2.1';
const bulkScript = fileURLToPath(new URL('../helpers/bulk.ts', import.meta.url));

let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
let wwan: LabWwan;
let supervisor: Supervisor;
let inspector: Inspector;
const children: Child[] = [];

interface Port {
  imei: string;
  wanIp: string;
  httpPort: number;
  socksPort: number;
  user: string;
  password: string;
  slot: number;
  iface: string;
}

const api = (path: string, init: RequestInit = {}): Promise<Response> =>
  fetch(`${inspector.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(init.body ? { 'content-type': 'application/json' } : {}),
    },
  });

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
        interface: string;
      }[]
    >`select m.imei, host(m.wan_ip) as wan_ip, a.http_port, a.socks_port, a.proxy_user, a.proxy_password,
        a.slot, m.interface
      from modems m join allocations a using (imei) where m.state = 'online' order by a.slot`
  ).map((r) => ({
    imei: r.imei,
    wanIp: r.wan_ip,
    httpPort: r.http_port,
    socksPort: r.socks_port,
    user: r.proxy_user,
    password: r.proxy_password,
    slot: r.slot,
    iface: r.interface,
  }));

const pidsOf = (imei: string): number[] =>
  [...supervisor.modems.values()].find((m) => m.imei === imei)?.proxyPids ?? [];

/** What the bulk server printed (one JSON line per upload it received). */
const bulkLines: string[] = [];
const reports = (): string[] => bulkLines.filter((l) => l.startsWith('{'));

/** A program in a namespace, started detached; resolves once it printed its first line. */
async function daemon(ns: string, argv: string[], lines?: string[]): Promise<void> {
  const child = spawnChild('ip', ['netns', 'exec', ns, process.execPath, '--import', 'tsx', ...argv], {
    detached: true,
    cleanup: false,
    stdout: 'pipe',
  });
  children.push(child);
  if (lines) child.stdout?.on('data', (d: Buffer) => lines.push(...d.toString().trim().split('\n')));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.once('data', () => resolve());
    void child.then(() => reject(new Error(`${argv.join(' ')} in ${ns} did not start`)));
  });
}

/** A transfer through a SOCKS port from inside the farm namespace: bytes per 500 ms. */
async function bulk(
  p: Port,
  mode: 'get' | 'put',
  seconds: number,
): Promise<{ start: number; bytes: number; buckets: number[] }> {
  const seen = reports().length;
  const r = await run(
    'ip',
    [
      'netns',
      'exec',
      net.farm,
      process.execPath,
      '--import',
      'tsx',
      bulkScript,
      'client',
      String(p.socksPort),
      p.user,
      p.password,
      ECHO_ADDRESS,
      String(BULK_PORT),
      mode,
      String(seconds),
    ],
    // node with tsx starts in seconds on a loaded machine
    { timeoutMs: 60_000 },
  );
  if (!r.ok) throw new Error(`bulk ${mode}: ${r.stderr}`);
  if (mode === 'get')
    return JSON.parse(r.stdout.trim()) as { start: number; bytes: number; buckets: number[] };
  // an upload is counted where it arrives: the server's line
  await until(() => Promise.resolve(reports().length > seen), 10_000, 'the bulk server’s count');
  return JSON.parse(reports()[seen] ?? '{}') as { start: number; bytes: number; buckets: number[] };
}

const kbps = (bytes: number, ms: number): number => (bytes * 8) / ms;

/** What curl gets through a port from inside the farm, from `source`, with or without a login. */
async function ask(
  kind: 'socks' | 'http',
  p: Port,
  login: { user: string; password: string } | null,
  source?: string,
): Promise<{ code: string; body: string }> {
  const auth = login ? `${login.user}:${login.password}@` : '';
  const proxy =
    kind === 'socks' ? `socks5://${auth}127.0.0.1:${p.socksPort}` : `http://${auth}127.0.0.1:${p.httpPort}`;
  const r = await net.inFarm([
    'curl',
    '-sS',
    '--max-time',
    '5',
    ...(source ? ['--interface', source] : []),
    '-o',
    '-',
    '-w',
    '\n%{http_code}',
    '-x',
    proxy,
    net.echoUrl,
  ]);
  const out = r.stdout.trim().split('\n');
  return { code: out.at(-1) ?? '', body: out.slice(0, -1).join('\n').trim() };
}

/** The echo server's answer (the source address it saw) through the port, or null. */
async function through(
  kind: 'socks' | 'http',
  p: Port,
  login: { user: string; password: string } | null,
  source?: string,
): Promise<string | null> {
  const r = await ask(kind, p, login, source);
  return r.code === '200' ? r.body : null;
}

/** An HTTP CONNECT tunnel through tinyproxy to the hold server, kept open; `ping()` uses it. */
async function tunnel(
  p: Port,
  login: { user: string; password: string },
): Promise<{ ping(): Promise<boolean>; close(): void }> {
  const script = `
    const net = require('net');
    const s = net.connect(${p.httpPort}, '127.0.0.1', () => {
      s.write('CONNECT ${ECHO_ADDRESS}:${HOLD_PORT} HTTP/1.1\\r\\nHost: x\\r\\nProxy-Authorization: Basic ' +
        Buffer.from('${login.user}:${login.password}').toString('base64') + '\\r\\n\\r\\n');
    });
    let open = false;
    s.on('data', (d) => {
      const t = d.toString();
      if (!open && /^HTTP\\/1\\.[01] 200/.test(t)) { open = true; console.log('open'); return; }
      if (open) console.log(t.trim());
    });
    s.on('close', () => { console.log('closed'); process.exit(0); });
    process.stdin.on('data', (d) => s.write(d));
  `;
  const child = spawnChild('ip', ['netns', 'exec', net.farm, process.execPath, '-e', script], {
    detached: true,
    cleanup: false,
    stdout: 'pipe',
    stdin: 'pipe',
  });
  children.push(child);
  const lines: string[] = [];
  child.stdout?.on('data', (d: Buffer) => lines.push(...d.toString().trim().split('\n')));
  await until(() => Promise.resolve(lines.includes('open') || lines.includes('closed')), 10_000, 'tunnel');
  if (!lines.includes('open')) throw new Error(`tunnel not opened: ${lines.join(' ')}`);
  return {
    async ping() {
      const before = lines.length;
      child.stdin?.write('ping');
      const deadline = Date.now() + 3_000;
      while (Date.now() < deadline) {
        if (lines.slice(before).includes('closed')) return false;
        if (lines.length > before) return true;
        await new Promise((r) => setTimeout(r, 20));
      }
      return false;
    },
    close() {
      child.stdin?.end();
      if (child.pid)
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          // gone
        }
    },
  };
}

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-access-'));
  await chmod(dir, 0o711);
  net = new NetLab({ name: `mf${randomBytes(2).toString('hex')}`, modems: N });
  await net.start();
  // the lab's internet: a bulk server and a server that answers every chunk, beside the echo server
  await daemon(net.carrier, [bulkScript, 'server', ECHO_ADDRESS, String(BULK_PORT)], bulkLines);
  await daemon(net.carrier, [bulkScript, 'hold', ECHO_ADDRESS, String(HOLD_PORT)]);
  // two client addresses in the farm: one in the allowlist's network, one not
  await net.farmIp(['addr', 'add', `${ALLOWED_CLIENT}/32`, 'dev', 'lo']);
  await net.farmIp(['addr', 'add', `${OTHER_CLIENT}/32`, 'dev', 'lo']);
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 19).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
  wwan = new LabWwan(net, lab);
  await wwan.start();
  const store = new Store({ sql: db.sql, url: db.url, hostId: 'access-host' });
  supervisor = new Supervisor(
    labSupervisor(store, lab, join(dir, 'state'), {
      modem: { ...FAST_MODEM, signalPollMs: 1_000, detachMs: 200 },
      link: { presencePollMs: 100, addressPollMs: 50, wwan },
      policy: { commandPollMs: 1_000 },
      dataPlane: labDataPlane(net, join(dir, 'run'), { egress: labEgress(net, 30_000) }),
    }),
  );
  await supervisor.start();
  inspector = new Inspector({
    store,
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    supervisor,
    // this test makes a dozen changes to one modem within a minute
    limits: { commandBurst: 50, commandRefillMs: 100 },
  });
  await inspector.start();
  await until(async () => (await ports()).length === N, 30_000, 'modems online');
  await until(
    async () => {
      const online = await ports();
      // microsocks and tinyproxy both started (and so both counted in the pids compared below)
      if (!online.every((p) => pidsOf(p.imei).length === 2)) return false;
      const seen = await Promise.all(online.map((p) => through('socks', p, p)));
      const http = await Promise.all(online.map((p) => through('http', p, p)));
      return seen.every((s, i) => s === online[i]?.wanIp) && http.every((s, i) => s === online[i]?.wanIp);
    },
    20_000,
    'every port serving',
  );
}, 90_000);

afterAll(async () => {
  await inspector?.stop();
  await supervisor?.stop();
  for (const child of children)
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
  if (dir) {
    await rm(dir, { recursive: true, force: true });
    expect((await execa('pgrep', ['-f', dir], { reject: false })).stdout).toBe('');
  }
});

describe.runIf(process.getuid?.() === 0)('speed limits, allowlist and logins in the lab', () => {
  it('a speed limit holds within 10 % over a 10 s transfer, both ways, and a change applies to a running transfer', async () => {
    const [p] = await ports();
    if (!p) throw new Error('no modem');
    const pids = pidsOf(p.imei);
    const set = await api(`/api/modems/${p.imei}/limits`, {
      method: 'PUT',
      body: JSON.stringify({ downloadKbps: 8000, uploadKbps: 4000 }),
    });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({
      downloadKbps: 8000,
      uploadKbps: 4000,
      unit: 'kbit/s',
      command: { status: 'done', result: { applied: true, shaping: 'kernel' } },
    });
    expect(await readShaping(p.iface, ifbName(p.slot), { netns: net.farm }).catch(() => null)).not.toBeNull();

    const down = await bulk(p, 'get', 10);
    const up = await bulk(p, 'put', 10);
    const downRate = kbps(down.bytes, 10_000);
    // what the server received within its first 10 s (the rest was still queued when the client stopped)
    const upRate = kbps(
      up.buckets.slice(0, 20).reduce((a, b) => a + b, 0),
      10_000,
    );
    console.log(
      `speed limit 8000/4000 kbit/s: download ${downRate.toFixed(0)} kbit/s, upload ${upRate.toFixed(0)} kbit/s`,
    );
    expect(Math.abs(downRate - 8000) / 8000).toBeLessThan(0.1);
    expect(Math.abs(upRate - 4000) / 4000).toBeLessThan(0.1);

    // a running download; the limit drops to a quarter midway: the rest of it runs at the new one (a raise
    // applies as fast, but TCP on the open connection then takes ~3 s to grow into it, and on a
    // loaded machine the faster rate is the CPU's to give)
    const gets = bulkLines.filter((l) => l === 'get').length;
    const running = bulk(p, 'get', 14);
    await until(
      () => Promise.resolve(bulkLines.filter((l) => l === 'get').length > gets),
      30_000,
      'the download started',
    );
    await new Promise((r) => setTimeout(r, 5_000));
    const changeAt = Date.now();
    const changed = await api(`/api/modems/${p.imei}/limits`, {
      method: 'PUT',
      body: JSON.stringify({ downloadKbps: 2000, uploadKbps: 4000 }),
    });
    const appliedAt = Date.now();
    expect(changed.status).toBe(200);
    const both = await running;
    // kbit/s over the whole 500 ms buckets within [fromMs, toMs) of the transfer
    const rate = (fromMs: number, toMs: number): { kbps: number; ms: number } => {
      const inside = both.buckets.filter((_, i) => i * 500 >= fromMs && (i + 1) * 500 <= toMs);
      const ms = inside.length * 500;
      return {
        kbps: ms
          ? kbps(
              inside.reduce((a, b) => a + b, 0),
              ms,
            )
          : NaN,
        ms,
      };
    };
    const before = rate(1_000, changeAt - both.start);
    const after = rate(appliedAt - both.start + 1_000, 14_000);
    console.log(
      `limit changed live: ${before.kbps.toFixed(0)} kbit/s over ${before.ms} ms before, ${after.kbps.toFixed(0)} kbit/s over ${after.ms} ms after (same connection); bytes per 500 ms: ${both.buckets.join(' ')}; change sent at ${changeAt - both.start} ms, applied at ${appliedAt - both.start} ms`,
    );
    expect(before.ms).toBeGreaterThanOrEqual(3_000);
    expect(after.ms).toBeGreaterThanOrEqual(3_000);
    // the old limit held before (the transfer need not have grown into it: on a loaded machine one
    // was seen at ~2,100 kbit/s after 5 s, still ramping up; the fresh 10-s transfers above hold
    // within 10 % of it)
    expect(before.kbps).toBeLessThan(8000 * 1.1);
    // the new limit, a quarter of the old, holds (never above it by more than 10 %); below it only
    // where this shared machine starved the client of CPU for a moment (seen: single 500 ms buckets
    // at half the rate)
    expect(after.kbps).toBeLessThan(2000 * 1.1);
    expect(after.kbps).toBeGreaterThan(2000 * 0.75);
    // no proxy restart, no rotation
    expect(pidsOf(p.imei)).toEqual(pids);

    // lifted: nothing of ours left on the link
    const lifted = await api(`/api/modems/${p.imei}/limits`, { method: 'PUT', body: '{}' });
    expect(lifted.status).toBe(200);
    expect(await readShaping(p.iface, ifbName(p.slot), { netns: net.farm })).toEqual({
      downloadKbps: null,
      uploadKbps: null,
    });
    expect(
      (await api(`/api/modems/${p.imei}/limits`, { method: 'PUT', body: '{"downloadKbps":1.5}' })).status,
    ).toBe(422);
  }, 120_000);

  it('an allowlisted client gets through without a password, an unlisted one does not', async () => {
    const [p] = await ports();
    if (!p) throw new Error('no modem');
    const login = { user: p.user, password: p.password };
    // before: nobody without a password
    expect(await through('socks', p, null, ALLOWED_CLIENT)).toBeNull();
    expect((await ask('http', p, null, ALLOWED_CLIENT)).code).toBe('407');

    const bad = await api(`/api/modems/${p.imei}/allowlist`, {
      method: 'PUT',
      body: JSON.stringify(['10.99.1.1/24', '0.0.0.0/0']),
    });
    expect(bad.status).toBe(422);
    expect(((await bad.json()) as { message: string }).message).toMatch(/host bits.*whole address space/);

    const set = await api(`/api/modems/${p.imei}/allowlist`, {
      method: 'PUT',
      body: JSON.stringify(['10.99.1.0/24', '2001:db8::/32']),
    });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({
      allowlist: ['10.99.1.0/24', '2001:db8::/32'],
      command: { status: 'done', result: { applied: true, allowlist: 2 } },
    });
    for (const kind of ['socks', 'http'] as const) {
      expect(await through(kind, p, null, ALLOWED_CLIENT), `${kind} allowlisted, no password`).toBe(p.wanIp);
      expect(await through(kind, p, null, OTHER_CLIENT), `${kind} unlisted, no password`).toBeNull();
      expect(await through(kind, p, login, OTHER_CLIENT), `${kind} unlisted, its login`).toBe(p.wanIp);
      // the companions' ports are the allowlist's only
      const open = kind === 'socks' ? p.socksPort + 2_000 : p.httpPort + 2_000;
      expect(await through(kind, { ...p, socksPort: open, httpPort: open }, null, OTHER_CLIENT)).toBeNull();
    }
    // the other modem is not affected
    const [, other] = await ports();
    expect(await through('socks', other!, null, ALLOWED_CLIENT)).toBeNull();

    // a changed allowlist applies at once (tinyproxy reloaded, nft replaced; no restart)
    const pids = pidsOf(p.imei);
    const moved = await api(`/api/modems/${p.imei}/allowlist`, {
      method: 'PUT',
      body: JSON.stringify(['10.99.2.0/24']),
    });
    expect(moved.status).toBe(200);
    expect(pidsOf(p.imei)).toEqual(pids);
    expect(await through('http', p, null, OTHER_CLIENT)).toBe(p.wanIp);
    expect(await through('http', p, null, ALLOWED_CLIENT)).toBeNull();

    const cleared = await api(`/api/modems/${p.imei}/allowlist`, { method: 'PUT', body: '[]' });
    expect(cleared.status).toBe(200);
    expect(await through('socks', p, null, OTHER_CLIENT)).toBeNull();
    expect(await through('socks', p, login, OTHER_CLIENT)).toBe(p.wanIp);
    expect((await run('ip', ['netns', 'exec', net.farm, 'nft', 'list', 'tables'])).stdout).not.toContain(
      'mf_access_',
    );
  }, 90_000);

  it('a second login works, a SOCKS one is refused on microsocks, removing it refuses it at once; other connections live on', async () => {
    const [p] = await ports();
    if (!p) throw new Error('no modem');
    const own = { user: p.user, password: p.password };
    const held = await tunnel(p, own);
    expect(await held.ping()).toBe(true);
    const pids = pidsOf(p.imei);

    const refused = await api(`/api/modems/${p.imei}/logins`, {
      method: 'POST',
      body: JSON.stringify({ username: 'alice' }),
    });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toMatchObject({
      error: 'backend_unsupported',
      message: expect.stringMatching(/microsocks/) as unknown,
    });

    const added = await api(`/api/modems/${p.imei}/logins`, {
      method: 'POST',
      body: JSON.stringify({ username: 'alice', ports: ['http'] }),
    });
    expect(added.status).toBe(201);
    const alice = (await added.json()) as { username: string; password: string; command: { status: string } };
    expect(alice.command.status).toBe('done');
    const aliceLogin = { user: 'alice', password: alice.password };
    expect(await through('http', p, aliceLogin)).toBe(p.wanIp);
    expect(await through('http', p, own)).toBe(p.wanIp);
    expect(await through('socks', p, aliceLogin)).toBeNull();

    const listed = (await (await api(`/api/modems/${p.imei}/logins`)).json()) as {
      username: string;
      primary: boolean;
    }[];
    expect(listed.map((l) => [l.username, l.primary])).toEqual([
      [p.user, true],
      ['alice', false],
    ]);
    expect(
      (
        await api(`/api/modems/${p.imei}/logins`, {
          method: 'POST',
          body: JSON.stringify({ username: 'alice', ports: ['http'] }),
        })
      ).status,
    ).toBe(409);

    const removed = await api(`/api/modems/${p.imei}/logins/alice`, { method: 'DELETE' });
    expect(removed.status).toBe(200);
    // at once: no wait between the answer and this
    expect((await ask('http', p, aliceLogin)).code).toBe('401');
    expect(await through('http', p, own)).toBe(p.wanIp);
    expect((await api(`/api/modems/${p.imei}/logins/alice`, { method: 'DELETE' })).status).toBe(404);
    expect((await api(`/api/modems/${p.imei}/logins/${p.user}`, { method: 'DELETE' })).status).toBe(409);

    // a login that expires: works until its expiry, then the host drops it by itself
    const expiresAt = new Date(Date.now() + 4_000).toISOString();
    const brief = await api(`/api/modems/${p.imei}/logins`, {
      method: 'POST',
      body: JSON.stringify({ username: 'brief', ports: ['http'], password: 'brief-secret-1', expiresAt }),
    });
    expect(brief.status).toBe(201);
    const briefLogin = { user: 'brief', password: 'brief-secret-1' };
    expect(await through('http', p, briefLogin)).toBe(p.wanIp);
    await until(
      async () => (await ask('http', p, briefLogin)).code === '401',
      10_000,
      'the expired login refused',
    );
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(expiresAt));

    // no proxy restart, and the open tunnel of the modem's own login lived through every change
    expect(pidsOf(p.imei)).toEqual(pids);
    expect(await held.ping()).toBe(true);
    held.close();
  }, 90_000);
});
