import { execa, type ResultPromise } from 'execa';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { Inspector } from '../../src/inspector/inspector.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import type { ModemView } from '../../src/store/modems.js';
import { Store } from '../../src/store/store.js';
import { ModemfleetError } from '../../src/util/errors.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TOKEN } from '../helpers/farm.js';
import { until } from '../helpers/until.js';
import { WsClient } from '../helpers/wsClient.js';

/**
 * Issue 20 item 3: several supervisors share one database; one of them (its own process) is
 * SIGKILLed. Its modems go stale within the limit, its commands fail with `host_unavailable`
 * (queued ones by the lease holder's sweep, new ones at submit time), and when it comes back the
 * stale flag clears and its modems take commands again.
 */

// short limits: a heartbeat every 300 ms, dead after 1.5 s (production: 10 s and 60 s)
const POLICY = { hostHeartbeatMs: 300, hostDeadAfterMs: 1_500 };
/** Dead after 1.5 s, marked at the holder's next sweep (the lease of a dead holder expires in 0.9 s). */
const STALE_WITHIN_MS =
  POLICY.hostDeadAfterMs + 3 * POLICY.hostHeartbeatMs + 2 * POLICY.hostHeartbeatMs + 1_500;

let db: TestDatabase;
let dir: string;
let lab: SimLab;
let storeA: Store;
let supervisorA: Supervisor;
let inspector: Inspector;
let hostB: ResultPromise | undefined;

async function startHostB(): Promise<{ child: ResultPromise; imeis: string[] }> {
  const child = execa(
    'node',
    [
      '--import',
      'tsx',
      'test/helpers/hostProcess.ts',
      db.url,
      'h02',
      '2',
      '3',
      join(dir, 'h02'),
      JSON.stringify(POLICY),
    ],
    { reject: false, buffer: false, stdout: 'pipe', stderr: 'inherit' },
  );
  const lines = createInterface({ input: child.stdout });
  const line = await new Promise<string>((resolve, reject) => {
    lines.once('line', resolve);
    void child.then((r) =>
      reject(new Error(`host h02 exited before it was ready: ${r.exitCode ?? r.signal}`)),
    );
  });
  lines.close();
  return { child, imeis: (JSON.parse(line) as { imeis: string[] }).imeis };
}

const api = (path: string, init: RequestInit = {}): Promise<Response> =>
  fetch(`${inspector.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(init.body ? { 'content-type': 'application/json' } : {}),
    },
  });

const modemsOf = async (): Promise<ModemView[]> => (await api('/api/modems')).json() as Promise<ModemView[]>;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-hosts-'));
  await chmod(dir, 0o711);
  const profiles = defaultProfiles(2, 1).map((p) => ({
    ...p,
    timings: { bootMs: 0, latencyMs: 0, attachMs: 0, resetMs: 100 },
  }));
  lab = new SimLab({ dir: join(dir, 'h01', 'lab'), profiles, wire: 'memory' });
  storeA = new Store({ sql: db.sql, url: db.url, hostId: 'h01' });
  supervisorA = new Supervisor({
    store: storeA,
    stateDir: join(dir, 'h01', 'state'),
    scan: lab.scan,
    hotplug: lab.hotplug(),
    modem: { registrationPollMs: 50, signalPollMs: 30_000, probeRetryMs: 50, detachMs: 100 },
    link: { ...(lab.openPort ? { openPort: lab.openPort } : {}), presencePollMs: 500, addressPollMs: 20 },
    spool: { fsync: 'never' },
    policy: { ...POLICY, rotationMinIntervalMs: 200, commandPollMs: 1_000 },
  });
  inspector = new Inspector({
    store: storeA,
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    supervisor: supervisorA,
    listenHeartbeatIntervalMs: 500,
    listenHeartbeatTimeoutMs: 2_000,
  });
});

afterAll(async () => {
  if (hostB) {
    hostB.kill('SIGKILL');
    await hostB;
  }
  await inspector?.stop().catch(() => undefined);
  await supervisorA?.stop().catch(() => undefined);
  await lab?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('a host that dies', () => {
  it('the farm lease: exactly one host sweeps at a time, another takes over when it expires', async () => {
    const x = new Store({ sql: db.sql, url: db.url, hostId: 'lease-x' });
    const y = new Store({ sql: db.sql, url: db.url, hostId: 'lease-y' });
    await x.registerHost();
    await y.registerHost();
    await db.sql`delete from leases`;
    const opts = { deadAfterMs: 60_000, leaseMs: 1_000 };
    for (let round = 0; round < 5; round++) {
      const results = await Promise.all([
        x.sweepDeadHosts(opts),
        y.sweepDeadHosts(opts),
        x.sweepDeadHosts(opts),
      ]);
      expect(results.filter((r) => r.held).length).toBeGreaterThanOrEqual(1);
      // only the holder's sweeps ran: never both hosts in one round
      const holders = new Set([
        results[0]?.held || results[2]?.held ? 'x' : null,
        results[1]?.held ? 'y' : null,
      ]);
      holders.delete(null);
      expect(holders.size).toBe(1);
    }
    const first = await x.farmLeaseHolder();
    const other = first === 'lease-x' ? y : x;
    expect((await other.sweepDeadHosts(opts)).held).toBe(false);
    await new Promise((r) => setTimeout(r, 1_100)); // the holder stops renewing: the lease expires
    expect((await other.sweepDeadHosts(opts)).held).toBe(true);
    expect(await x.farmLeaseHolder()).toBe(other.hostId);
    await other.releaseFarmLease();
    expect(await x.farmLeaseHolder()).toBeUndefined();
    await db.sql`delete from hosts where id like 'lease-%'`; // not part of the next test's farm
  });

  it('its modems go stale, its commands fail with host_unavailable, and it comes back', async () => {
    // h02 first, so it holds the farm lease: h01 has to take the work over when h02 dies
    const b = await startHostB();
    hostB = b.child;
    expect(await until(() => storeA.farmLeaseHolder(), { timeoutMs: 5_000 })).toBe('h02');
    await lab.start();
    await supervisorA.start();
    await inspector.start();
    await until(async () => (await modemsOf()).filter((m) => m.state === 'online').length === 5, {
      timeoutMs: 30_000,
      message: async () => `5 online: ${JSON.stringify((await modemsOf()).map((m) => [m.host, m.state]))}`,
    });
    expect((await modemsOf()).every((m) => m.stale === false)).toBe(true);
    // exactly one host does the farm's work: h01 sweeps without the lease and does nothing
    await until(() => supervisorA.warden.stats.ticks >= 3, { timeoutMs: 5_000 });
    expect(supervisorA.warden.stats.sweeps).toBe(0);
    expect(await storeA.farmLeaseHolder()).toBe('h02');

    const ws = new WsClient(inspector.url);
    await ws.next((m) => m.type === 'snapshot');
    const [bImei, bOther] = b.imeis as [string, string];
    const aImei = lab.modem(0).imei;

    b.child.kill('SIGKILL');
    await b.child;
    hostB = undefined;
    const killedAt = Date.now();
    // queued after the kill, before anyone noticed: it waits for h02 until the sweep fails it
    const queued = await storeA.insertCommand(bImei, 'rotate', 'test');

    const stale = await until(
      async () => {
        const all = await modemsOf();
        const bs = all.filter((m) => b.imeis.includes(m.imei));
        return bs.length === 3 && bs.every((m) => m.stale) && all;
      },
      { timeoutMs: STALE_WITHIN_MS, message: 'the killed host’s modems stale' },
    );
    const elapsed = Date.now() - killedAt;
    expect(elapsed).toBeGreaterThanOrEqual(POLICY.hostDeadAfterMs - POLICY.hostHeartbeatMs);
    expect(elapsed).toBeLessThan(STALE_WITHIN_MS);
    // the live host's modems are not stale, and the dead host's keep their last state
    expect(stale.filter((m) => m.host === 'h01').map((m) => [m.state, m.stale])).toEqual([
      ['online', false],
      ['online', false],
    ]);
    expect(stale.filter((m) => m.host === 'h02').every((m) => m.state === 'online')).toBe(true);
    const one = (await (await api(`/api/modems/${bImei}`)).json()) as ModemView;
    expect(one.stale).toBe(true);
    // h01 took the lease over and did the marking
    expect(await storeA.farmLeaseHolder()).toBe('h01');
    expect(supervisorA.warden.stats.hostsMarked).toBe(1);

    // the stream: the host event, then its modems' rows with the flag
    await ws.next((m) => m.type === 'host' && m.event === 'host_stale' && m.host === 'h02');
    for (const imei of b.imeis)
      await ws.next(
        (m) => m.type === 'modem' && (m.modem as ModemView).imei === imei && (m.modem as ModemView).stale,
      );

    // the command queued before the mark failed with host_unavailable, not left waiting
    const failed = await until(
      async () => {
        const c = await storeA.command(queued);
        return c?.status === 'failed' && c;
      },
      { timeoutMs: 3 * POLICY.hostHeartbeatMs + 2_000, message: 'the queued command failed' },
    );
    expect(failed.result).toMatchObject({ error: 'host_unavailable', host: 'h02' });

    // new commands fail at submit time: the API (409) and the store (the CLI's path)
    const refused = await api(`/api/modems/${bOther}/commands`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'reset' }),
    });
    expect(refused.status).toBe(409);
    expect(await refused.json()).toMatchObject({ error: 'host_unavailable' });
    await expect(storeA.insertCommand(bOther, 'rotate', 'test')).rejects.toSatisfy(
      (e: unknown) => e instanceof ModemfleetError && e.code === 'host_unavailable',
    );
    // the live host's modems still take commands
    const ok = await api(`/api/modems/${aImei}/commands`, {
      method: 'POST',
      body: JSON.stringify({ kind: 'rotate' }),
    });
    expect(ok.status).toBe(202);

    // metrics count them apart
    const metrics = await (await fetch(`${inspector.url}/metrics`)).text();
    expect(metrics).toMatch(/^modemfleet_modems_stale\{host="h02"\} 3$/m);
    expect(metrics).toMatch(/^modemfleet_modems_stale\{host="h01"\} 0$/m);
    expect(metrics).toMatch(/^modemfleet_modem_online\{imei="\d+",host="h02"\} 0$/m);

    // it comes back: the mark clears (NOTIFY host_started), its modems reconcile and take commands
    const mark = ws.messages.length;
    const again = await startHostB();
    hostB = again.child;
    await until(async () => (await modemsOf()).every((m) => !m.stale), {
      timeoutMs: 10_000,
      message: 'the stale flag cleared',
    });
    for (const imei of b.imeis)
      await ws.next(
        (m) => m.type === 'modem' && (m.modem as ModemView).imei === imei && !(m.modem as ModemView).stale,
        mark,
      );
    await until(
      async () => (await modemsOf()).filter((m) => m.host === 'h02' && m.state === 'online').length === 3,
      { timeoutMs: 30_000, message: 'h02 online again' },
    );
    const id = await storeA.insertCommand(bOther, 'rotate', 'test');
    const done = await until(
      async () => {
        const c = await storeA.command(id);
        return (c?.status === 'done' || c?.status === 'failed') && c;
      },
      { timeoutMs: 20_000, message: 'the rotate on the returned host finished' },
    );
    expect(done.status).toBe('done');
    expect((await storeA.command(queued))?.status).toBe('failed'); // failed once, stays failed
    ws.close();
  }, 120_000);
});
