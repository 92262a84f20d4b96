import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { Inspector } from '../../src/inspector/inspector.js';
import { createRootLogger } from '../../src/log.js';
import { ip, ipBatch } from '../../src/net/ip.js';
import { NO_LIMIT } from '../../src/net/trafficTable.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { LabWwan } from '../../src/sim/lab/labWwan.js';
import { ECHO_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { Store } from '../../src/store/store.js';
import { bulk, startBulkServer, type BulkResult } from '../helpers/trafficBulkLab.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { readTrafficChart } from '../helpers/trafficChart.js';
import { labDataPlane, labEgress } from '../helpers/labDataPlane.js';
import { until } from '../helpers/until.js';

/**
 * Traffic accounting and quotas end to end, as root: simulated EC25s, the supervisor with a real
 * PostgreSQL, real proxies (microsocks, tinyproxy) with their own uids and the egress policy, in a
 * farm namespace; the customer is in a namespace of its own, joined to the farm by a veth (MTU
 * 1500), and moves bulk bytes through a port to a server behind the carrier. What the database
 * counts is what the customer's socket wrote and read, across a proxy kill, a supervisor
 * restart and a handover (the proxies serving with no supervisor, then adopted), and /metrics
 * serves the kernel's counters; a quota stops the port at its limit and a raise reopens it; an expiry closes it.
 */

const N = 2;
/** The modem panel's 24-h traffic chart as Chromium draws it (`readTrafficChart`). */
async function pageChart(url: string, token: string, imei: string): ReturnType<typeof readTrafficChart> {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(`${url}/#token=${token}`);
    await page.locator(`.card[data-imei="${imei}"]`).click();
    return await readTrafficChart(page);
  } finally {
    await browser.close();
  }
}

const CHROMIUM = process.env['MODEMFLEET_CHROMIUM'] ?? '/usr/bin/chromium';

/** Debian's promtool, unpacked by scripts/setup.sh (as in test/integration/inspectorApi.test.ts). */
const PROMTOOL = new URL('../../var/promtool/usr/bin/promtool', import.meta.url).pathname;
const name = `mt${randomBytes(2).toString('hex')}`;
const customer = `${name}-cust`;
const FARM_SIDE = '192.168.98.1';
const BULK = { host: ECHO_ADDRESS, port: 8_090 };
let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
let wwan: LabWwan;
let store: Store;
let supervisor: Supervisor;
let server: { stop(): Promise<void> } | undefined;

const makeSupervisor = (): Supervisor =>
  new Supervisor({
    store,
    stateDir: join(dir, 'state'),
    scan: lab.scan,
    hotplug: lab.hotplug(),
    rescanIntervalMs: 2_000,
    modem: {
      probeRetryMs: 100,
      registrationPollMs: 100,
      signalPollMs: 1_000,
      backoffBaseMs: 100,
      detachMs: 200,
    },
    link: { presencePollMs: 100, addressPollMs: 50, wwan },
    spool: { fsync: 'never' },
    policy: {
      commandPollMs: 500,
      rotationMinIntervalMs: 500,
      trafficReadMs: 500,
      trafficSampleMs: 1_000,
      trafficQuotaPollMs: 2_000,
    },
    ...(process.env['MF_DEBUG'] ? { log: createRootLogger({ level: 'debug' }) } : {}),
    dataPlane: labDataPlane(net, join(dir, 'run'), {
      routingConfig: { verifyIntervalMs: 10 * 60_000 },
      egress: labEgress(net, 1_000),
    }),
    // the egress probes run as root in the farm namespace: not a customer's bytes
    traffic: { probeUid: 0 },
  });

interface Row {
  imei: string;
  state: string;
  http_port: number;
  socks_port: number;
  proxy_user: string;
  proxy_password: string;
}
const modems = () =>
  db.sql<Row[]>`select m.imei, m.state, a.http_port, a.socks_port, a.proxy_user, a.proxy_password
    from modems m join allocations a using (imei) order by m.imei`;
const via = (m: Row, kind: 'socks' | 'http') => ({
  kind,
  host: FARM_SIDE,
  port: kind === 'socks' ? m.socks_port : m.http_port,
  user: m.proxy_user,
  password: m.proxy_password,
});
const stored = async (imei: string) => {
  const [r] = await db.sql<{ d: string | null; u: string | null }[]>`
    select sum(download)::text as d, sum(upload)::text as u from traffic_minute where imei = ${imei}`;
  return { download: Number(r?.d ?? 0), upload: Number(r?.u ?? 0) };
};
const serving = async (m: Row): Promise<void> => {
  await until(async () => (await net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password)) !== null, {
    timeoutMs: 60_000,
    intervalMs: 300,
    message: `port of ${m.imei} serving`,
  });
  await until(async () => (await net.probe('http', m.http_port, m.proxy_user, m.proxy_password)) !== null, {
    timeoutMs: 30_000,
    intervalMs: 300,
    message: `http port of ${m.imei} serving`,
  });
};
const kernelLimit = async (imei: string): Promise<number | undefined> => {
  const state = await supervisor.traffic?.accounting.read();
  return [...(state?.parts.values() ?? [])].find((p) => p.reading.imei === imei)?.reading.quotaLimit;
};
const within = (counted: number, truth: number, share: number): void => {
  expect(counted).toBeGreaterThanOrEqual(truth * (1 - share));
  expect(counted).toBeLessThanOrEqual(truth * (1 + share));
};

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-traffic-e2e-'));
  await chmod(dir, 0o711);
  net = new NetLab({ name, modems: N });
  await net.start();
  // the customer's own network: not the host, a veth as an Ethernet would be
  await ip(['netns', 'add', customer]);
  await ipBatch([`link add cust0 netns ${net.farm} type veth peer name custc netns ${customer}`]);
  await ipBatch([`addr add ${FARM_SIDE}/30 dev cust0`, 'link set cust0 up'], { netns: net.farm });
  await ipBatch(['link set lo up', 'addr add 192.168.98.2/30 dev custc', 'link set custc up'], {
    netns: customer,
  });
  server = await startBulkServer(net.carrier, BULK.host, BULK.port);
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 23).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
  wwan = new LabWwan(net, lab);
  await wwan.start();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'traffic-host' });
  supervisor = makeSupervisor();
  await supervisor.start();
  await until(async () => (await modems()).filter((m) => m.state === 'online').length === N, {
    timeoutMs: 60_000,
    intervalMs: 300,
    message: 'online',
  });
  for (const m of await modems()) await serving(m);
}, 180_000);

afterAll(async () => {
  await supervisor?.stop();
  await server?.stop().catch(() => undefined);
  await wwan?.stop();
  await lab?.stop();
  await net?.stop();
  await ip(['netns', 'del', customer]).catch(() => undefined);
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
  const left = await execa('pgrep', ['-f', dir], { reject: false });
  expect(left.stdout).toBe('');
});

describe('traffic accounting and quotas end to end', () => {
  it('what the customer sent and received is what is counted, within 1 %, across a proxy kill, a supervisor restart and a handover', async () => {
    const m = (await modems())[0]!;
    const before = await stored(m.imei);
    const results: BulkResult[] = [];
    const move = async (): Promise<void> => {
      results.push(await bulk(customer, via(m, 'socks'), BULK, 2_000_000, 6_000_000));
      results.push(await bulk(customer, via(m, 'http'), BULK, 1_000_000, 3_000_000));
      // small exchanges, where headers weigh most
      for (let i = 0; i < 5; i++) results.push(await bulk(customer, via(m, 'socks'), BULK, 200, 1_000));
    };
    await move();
    // a proxy killed: restarted under the same uid; the kernel counters do not notice
    const held = [...supervisor.modems.values()].find((s) => s.imei === m.imei);
    for (const pid of held?.proxyPids ?? []) process.kill(pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
    await serving(m);
    await move();
    // a supervisor restart: the counters stay in the kernel, the next process carries on from them
    await supervisor.stop();
    supervisor = makeSupervisor();
    await supervisor.start();
    await until(async () => (await modems()).find((x) => x.imei === m.imei)?.state === 'online', {
      timeoutMs: 60_000,
      intervalMs: 300,
    });
    await serving(m);
    await move();
    // a handover (SIGTERM): the proxies serve on with no supervisor, the kernel counts what they
    // serve meanwhile, the next run adopts them and carries on from the same counters
    const pidsBefore = [...supervisor.modems.values()].find((s) => s.imei === m.imei)?.proxyPids ?? [];
    expect(pidsBefore.length).toBeGreaterThan(0);
    await supervisor.stop({ handover: true });
    await move();
    supervisor = makeSupervisor();
    await supervisor.start();
    await until(() => [...supervisor.modems.values()].find((s) => s.imei === m.imei)?.proxyAdopted === true, {
      timeoutMs: 60_000,
      intervalMs: 300,
      message: 'the handed-over proxy adopted',
    });
    expect([...supervisor.modems.values()].find((s) => s.imei === m.imei)?.proxyPids).toEqual(pidsBefore);
    await serving(m);
    await move();
    for (const r of results) expect(r.error).toBeNull();
    const sent = results.reduce((n, r) => n + r.bytesWritten, 0);
    const received = results.reduce((n, r) => n + r.bytesRead, 0);
    let counted = { download: 0, upload: 0 };
    await until(
      async () => {
        const now = await stored(m.imei);
        counted = { download: now.download - before.download, upload: now.upload - before.upload };
        return counted.download >= received && counted.upload >= sent;
      },
      { timeoutMs: 20_000, intervalMs: 250, message: 'samples stored' },
    );
    // no more arrive later (nothing counted twice)
    await new Promise((r) => setTimeout(r, 2_500));
    const settled = await stored(m.imei);
    console.log(
      `e2e traffic: upload sent ${sent} counted ${settled.upload - before.upload}; download received ${received} counted ${settled.download - before.download}`,
    );
    within(settled.upload - before.upload, sent, 0.01);
    within(settled.download - before.download, received, 0.01);
    // rolled up alike, and the metric (the kernel's counters) agrees with the database
    const [day] = await db.sql<
      { d: string }[]
    >`select sum(download)::text as d from traffic_day where imei = ${m.imei}`;
    expect(Number(day?.d)).toBe(settled.download);
    const figure = supervisor.status().traffic.find((t) => t.imei === m.imei);
    expect(figure?.download).toBeGreaterThanOrEqual(received);
    // ...and /metrics serves it as a prom-client counter that promtool accepts
    const inspector = new Inspector({
      store,
      host: '127.0.0.1',
      port: 0,
      token: 'traffic-e2e-token-0123456789',
      supervisor,
      listenHeartbeatIntervalMs: 500,
      listenHeartbeatTimeoutMs: 2_000,
    });
    await inspector.start();
    try {
      const metrics = await (await fetch(`${inspector.url}/metrics`)).text();
      expect(metrics).toMatch(/^# TYPE modemfleet_port_bytes_total counter$/m);
      for (const [direction, value] of [
        ['download', figure?.download],
        ['upload', figure?.upload],
      ] as const) {
        const line = new RegExp(
          `^modemfleet_port_bytes_total\\{imei="${m.imei}",direction="${direction}"\\} ([0-9]+)$`,
          'm',
        ).exec(metrics);
        expect(Number(line?.[1])).toBeGreaterThanOrEqual(value ?? Infinity);
      }
      const lint = await execa(PROMTOOL, ['check', 'metrics'], { input: metrics, reject: false });
      expect(lint.stdout + lint.stderr, 'promtool check metrics').toBe('');
      expect(lint.exitCode).toBe(0);
      // ...and the page's traffic chart, in a real Chromium, draws the bytes this test moved
      const chart = await pageChart(inspector.url, 'traffic-e2e-token-0123456789', m.imei);
      expect(chart.bars.reduce((n, b) => n + b.download, 0)).toBe(settled.download);
      expect(chart.bars.reduce((n, b) => n + b.upload, 0)).toBe(settled.upload);
      within(chart.download - before.download, received, 0.01);
      within(chart.upload - before.upload, sent, 0.01);
    } finally {
      await inspector.stop();
    }
  }, 420_000);

  it('a quota stops the port within 1 % of its limit, the port refuses, a raise reopens it at once', async () => {
    const m = (await modems())[1]!;
    const quota = 20_000_000;
    await store.setQuota(m.imei, { bytes: quota, period: 'day' }, 'e2e');
    // the owning host has it in the kernel (NOTIFY) before the customer starts
    await until(async () => (await kernelLimit(m.imei)) !== NO_LIMIT, { timeoutMs: 10_000, intervalMs: 100 });
    // downloads until the port stops: the kernel may stop it a little early (the L3/payload ratio
    // is estimated), cutting the connection; then it reopens for the rest, and the next one goes on
    let through = 0;
    let cuts = 0;
    const reason = async () => (await store.modems({ imei: m.imei }))[0]?.reason;
    for (let i = 0; i < 10; i++) {
      const open = await until(
        async () => {
          if ((await reason()) === 'quota_exceeded') return 'closed';
          const r = (await supervisor.traffic?.accounting.read())?.parts;
          const part = [...(r?.values() ?? [])].find((p) => p.reading.imei === m.imei)?.reading;
          return part && !part.closed && part.quotaUsed < part.quotaLimit ? 'open' : false;
        },
        { timeoutMs: 15_000, intervalMs: 100 },
      );
      if (open === 'closed') break;
      const cut = await bulk(customer, via(m, 'socks'), BULK, 0, 100_000_000, 120_000);
      // cut short: reset (Node may report a reset as an end of the stream), or refused
      expect(cut.complete).toBe(false);
      expect([null, 'ECONNRESET', 'ECONNREFUSED']).toContain(cut.error);
      through += cut.bytesWritten + cut.bytesRead;
      cuts++;
    }
    const counted = await until(
      async () => {
        const q = await store.quota(m.imei);
        return q && q.used >= through ? q.used : 0;
      },
      { timeoutMs: 10_000, intervalMs: 200, message: 'usage stored' },
    );
    console.log(
      `e2e quota: ${quota} bytes allowed, ${through} went through in ${cuts} connection(s) (${((100 * through) / quota).toFixed(2)} %), ${counted} counted`,
    );
    within(through, quota, 0.01);
    within(counted, quota, 0.01);
    const refused = await bulk(customer, via(m, 'http'), BULK, 10, 10, 30_000);
    expect(refused.error).toBe('ECONNREFUSED');
    await until(async () => (await store.modems({ imei: m.imei }))[0]?.reason === 'quota_exceeded', {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    const alerts = await db.sql<{ kind: string }[]>`
      select kind from alerts where imei = ${m.imei} and kind like 'quota%' order by id`;
    expect(alerts.map((a) => a.kind)).toEqual(['quota_warning', 'quota_exceeded']);
    // the modem itself is fine: online, its egress guard (not a customer) still gets through
    await new Promise((r) => setTimeout(r, 3_000));
    expect((await modems()).find((x) => x.imei === m.imei)?.state).toBe('online');
    expect(
      await db.sql`select 1 from alerts where imei = ${m.imei} and kind = 'egress_check_failed'`,
    ).toHaveLength(0);
    // a raise: serving again at once, no rotation, no restart
    const pids = [...supervisor.modems.values()].find((s) => s.imei === m.imei)?.proxyPids;
    await store.setQuota(m.imei, { bytes: quota * 10, period: 'day' }, 'e2e');
    await until(async () => (await bulk(customer, via(m, 'http'), BULK, 10, 10, 30_000)).error === null, {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    expect([...supervisor.modems.values()].find((s) => s.imei === m.imei)?.proxyPids).toEqual(pids);
    await until(async () => (await store.modems({ imei: m.imei }))[0]?.reason === null, {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    const journal = await db.sql<{ event: string; detail: { reason?: string } }[]>`
      select event, detail from modem_transitions where imei = ${m.imei} and event like 'port.%' order by seq`;
    expect(
      journal.map((j) => j.event),
      JSON.stringify(journal),
    ).toEqual(['port.closed', 'port.reopened']);
    expect(journal[0]?.detail.reason).toBe('quota_exceeded');
    await store.clearQuota(m.imei, 'e2e');
  }, 300_000);

  it('an expiry closes the port at its time; clearing it reopens the port', async () => {
    const m = (await modems())[1]!;
    await until(async () => (await kernelLimit(m.imei)) === NO_LIMIT, { timeoutMs: 10_000, intervalMs: 100 });
    expect((await bulk(customer, via(m, 'socks'), BULK, 100, 100, 30_000)).error).toBeNull();
    const at = new Date(Date.now() + 2_000);
    await store.setExpiry(m.imei, at, 'e2e');
    await until(
      async () => (await bulk(customer, via(m, 'socks'), BULK, 10, 10, 30_000)).error === 'ECONNREFUSED',
      {
        timeoutMs: 15_000,
        intervalMs: 200,
      },
    );
    expect(Date.now()).toBeGreaterThanOrEqual(at.getTime());
    await until(async () => (await store.modems({ imei: m.imei }))[0]?.reason === 'expired', {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    expect(await db.sql`select 1 from alerts where imei = ${m.imei} and kind = 'expired'`).toHaveLength(1);
    await store.clearExpiry(m.imei, 'e2e');
    await until(async () => (await bulk(customer, via(m, 'socks'), BULK, 10, 10, 30_000)).error === null, {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
    await until(async () => (await store.modems({ imei: m.imei }))[0]?.reason === null, {
      timeoutMs: 10_000,
      intervalMs: 200,
    });
  }, 120_000);
});
