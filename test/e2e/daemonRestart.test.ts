import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipJson } from '../../src/net/ip.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/**
 * `modemfleet run` with the data plane, SIGKILLed and started again: its proxies (own process
 * groups) outlive it; the new run sweeps them before starting its own, so there is exactly one
 * proxy per port, one rule per priority, and every port still egresses from its modem.
 */

const N = 3;
let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
const children: ResultPromise[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-restart-'));
  await chmod(dir, 0o711); // as root the proxies run under their own uids and read their configs below it
  net = new NetLab({ name: `mf${randomBytes(2).toString('hex')}`, modems: N });
  await net.start();
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 31).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({
      scan: lab.scan,
      hotplug: 'watch',
      spoolFsync: 'never',
      modem: { probeRetryMs: 100, registrationPollMs: 100, signalPollMs: 1000, backoffBaseMs: 100 },
      dataPlane: {
        netns: net.farm,
        backend: 'microsocks+tinyproxy',
        prefix: 24,
        runDir: join(dir, 'run'),
        egress: { url: net.echoUrl, intervalMs: 2000 },
      },
    }),
  );
}, 60_000);

afterAll(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
  await execa('pkill', ['-KILL', '-f', join(dir, 'run')], { reject: false });
  await lab?.stop();
  await net?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

function daemon(): { child: ResultPromise } {
  const child = execa('node', ['bin/modemfleet.js', 'run', '--config', join(dir, 'config.json')], {
    reject: false,
    env: {
      DATABASE_URL: db.url,
      MODEMFLEET_HOST_ID: 'restart-host',
      MODEMFLEET_STATE_DIR: join(dir, 'state'),
      MODEMFLEET_HTTP: '127.0.0.1:0',
    },
  });
  children.push(child);
  return { child };
}

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const modems = () =>
  db.sql<
    {
      imei: string;
      state: string;
      seq: number;
      wan_ip: string;
      socks_port: number;
      http_port: number;
      proxy_user: string;
      proxy_password: string;
      slot: number;
    }[]
  >`
    select m.imei, m.state, m.seq::int, host(m.wan_ip) as wan_ip, a.socks_port, a.http_port, a.proxy_user, a.proxy_password, a.slot
    from modems m join allocations a using (imei) order by m.imei`;

async function allServing(): Promise<boolean> {
  const rows = await modems();
  if (rows.length !== N || rows.some((m) => m.state !== 'online')) return false;
  for (const m of rows)
    if ((await net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password)) !== m.wan_ip) return false;
  return true;
}

const proxyProcesses = async () =>
  String((await execa('pgrep', ['-f', '-a', 'microsocks|tinyproxy'], { reject: false })).stdout)
    .split('\n')
    .filter((l) => l.includes(join(dir, 'run')) || / -b 100\.65\./.test(l));

describe('modemfleet run with the data plane, killed and started again', () => {
  it('no orphan or duplicate proxy, no duplicate rules, same ports', async () => {
    const { child: first } = daemon();
    await until(allServing, 40_000, 'serving');
    const before = await modems();
    expect(await proxyProcesses()).toHaveLength(2 * N);

    first.kill('SIGKILL');
    await first;
    // its proxies are in their own process groups: they outlive the supervisor
    expect(await proxyProcesses()).toHaveLength(2 * N);

    const { child: second } = daemon();
    await until(
      async () =>
        (await modems()).every((m, i) => m.seq > (before[i]?.seq ?? Infinity)) && (await allServing()),
      40_000,
      'serving again',
    );
    expect(await proxyProcesses()).toHaveLength(2 * N);
    const after = await modems();
    expect(after.map((m) => [m.imei, m.socks_port, m.http_port])).toEqual(
      before.map((m) => [m.imei, m.socks_port, m.http_port]),
    );
    const rules = await ipJson<{ priority?: number }>(['rule', 'show'], { netns: net.farm });
    for (const m of after) expect(rules.filter((r) => r.priority === 1000 + 2 * m.slot)).toHaveLength(1);

    second.kill('SIGTERM');
    const stopped = await second;
    expect(stopped.exitCode).toBe(0);
    expect(await proxyProcesses()).toEqual([]);
  }, 120_000);
});
