import { fork, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';
import type { Sql } from '../src/store/database.js';
import { Store } from '../src/store/store.js';
import { sleep } from '../src/util/time.js';
import type { FarmClientsReply, FarmClientsRequest } from './farmClients.js';
import type { FarmHostReply, FarmHostRequest, FarmHostSettings } from './farmHost.js';
import type { FarmInspectorReply, FarmInspectorRequest, FarmInspectorSettings } from './farmInspector.js';
import type { FarmListenerReply, FarmListenerRequest } from './farmListener.js';

/**
 * A farm of farms on one machine: `hosts` supervisors, each in a process of its own (host ids
 * h01..h10) with `modemsPerHost` in-process simulated EC25s, one PostgreSQL, one inspector and
 * `clients` WebSocket clients, each in a process of its own, and a process that only listens (the
 * clock of record for notifications). After boot, a background like a farm's:
 * signal polls, 1 % of the modems rotated per minute (commands inserted as an operator would),
 * a modem unplugged and plugged back every few seconds. Times across processes are
 * `performance.timeOrigin + performance.now()`: one clock for the machine.
 */
export interface FarmScenario {
  hosts: number;
  modemsPerHost: number;
  clients: number;
  windowSeconds: number;
  /** Pool size of each host (policy.databasePoolMax). */
  poolMax: number;
  /** Share of the modems rotated per minute (a farm: 0.01). */
  rotationsPerMinute: number;
  /** Measure the page's first render in Chromium (when it is installed). */
  page?: boolean;
  /**
   * No supervisors: the modems' rows are journaled straight into the database (detecting → online)
   * and the window's rotations are journaled as their transitions would be (a rotation's 7, one batch
   * each). The inspector's side of a farm too big for the machine's cores to simulate.
   */
  synthetic?: boolean;
}

export interface FarmFigures {
  modems: number;
  hosts: number;
  clients: number;
  poolMax: number;
  bootSeconds: number;
  /** Transition made (its `at`, in the host) → its NOTIFY received (i.e. committed), boot and window. */
  journalLagP50Ms: number;
  journalLagP99Ms: number;
  journalLagSamples: number;
  /** The same in the window only (the background after boot). */
  windowJournalLagP99Ms: number;
  windowJournalLagSamples: number;
  /** The NOTIFY received (by the listening process) → the transition message received by each WebSocket client. */
  wsP50Ms: number;
  wsP99Ms: number;
  wsSamples: number;
  wsLost: number;
  /** One client alone: connect → its snapshot message received whole. */
  snapshotMs: number;
  /** All `clients` connecting at once: the slowest one's. */
  snapshotBurstMaxMs: number;
  snapshotBytes: number;
  apiModemsMs: number;
  apiModemsBytes: number;
  apiPageMs: number | null;
  metricsMs: number;
  metricsBytes: number;
  /** Sessions in pg_stat_activity (max sampled in the window), all and by application_name. */
  connections: number;
  connectionsByApplication: Record<string, number>;
  maxConnections: number;
  /** CPU of each host process in the window, share of one core. */
  cpuPerHost: Record<string, number>;
  cpuPerHostMax: number;
  rotationsRequested: number;
  unplugs: number;
  pageFirstRenderMs: number | null;
  /**
   * Where the page's first render went, ms from its navigation start (the page's own marks):
   * loaded, WebSocket opened, snapshot received, cards drawn.
   */
  pageMarks: Record<string, number> | null;
  /** The inspector's process: event-loop delay in the window, p99 and max. */
  inspectorLoopDelayP99Ms: number;
  inspectorLoopDelayMaxMs: number;
}

const TOKEN = 'bench-farm-token-0123456789abcdef';

export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const v = sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
  return Number(v.toFixed(2));
}

function waitFor<R extends { type: string }>(
  child: ChildProcess,
  type: R['type'],
  timeoutMs: number,
): Promise<R> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.off('message', on);
      reject(new Error(`no '${type}' from pid ${child.pid} in ${timeoutMs} ms`));
    }, timeoutMs);
    const on = (m: R): void => {
      if (m.type === 'failed') {
        clearTimeout(timer);
        child.off('message', on);
        reject(new Error(`child ${child.pid} failed: ${(m as unknown as { message: string }).message}`));
      } else if (m.type === type) {
        clearTimeout(timer);
        child.off('message', on);
        resolve(m);
      }
    };
    child.on('message', on);
  });
}

const script = (name: string): string => new URL(`./${name}`, import.meta.url).pathname;
const forkTs = (name: string, env: Record<string, string> = {}): ChildProcess =>
  fork(script(name), [], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

async function fetchTimed(url: string, auth = true): Promise<{ ms: number; bytes: number }> {
  const { ms, value } = await timed(async () => {
    const r = await fetch(url, auth ? { headers: { authorization: `Bearer ${TOKEN}` } } : {});
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status} ${await r.text()}`);
    return (await r.arrayBuffer()).byteLength;
  });
  return { ms: Number(ms.toFixed(1)), bytes: value };
}

/** Chromium, started before the window (its start is not the page's render), or null when absent. */
async function launchBrowser(): Promise<Browser | null> {
  const chromiumPath = process.env['MODEMFLEET_CHROMIUM'] ?? '/usr/bin/chromium';
  if (!existsSync(chromiumPath)) return null;
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox'] });
}

async function pageFirstRender(
  browser: Browser,
  url: string,
): Promise<{ ms: number; marks: Record<string, number> }> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  try {
    const t0 = performance.now();
    await page.goto(`${url}/#token=${TOKEN}`);
    // first render: the snapshot's cards on the screen and the stream live
    // (the page's own clock when this first held: what the rest of the time was spent on)
    // (an arrow with nothing named inside: tsx's helpers do not exist in the page, and its CSP
    // refuses a string to evaluate)
    await page.waitForFunction(
      () => {
        const ok =
          document.querySelectorAll('.card').length > 0 &&
          document.querySelector('#conn')?.textContent === 'live';
        if (ok) (window as unknown as { __firstSeen?: number }).__firstSeen ??= performance.now();
        return ok;
      },
      undefined,
      { timeout: 60_000 },
    );
    const ms = Math.round(performance.now() - t0);
    // where it went (the page's own marks, from navigation start)
    // (a string: tsx's helpers do not exist in the page)
    const marks: Record<string, number> = await page.evaluate(`(() => {
      const at = (name) => Math.round(performance.getEntriesByName(name)[0]?.startTime ?? NaN);
      const nav = performance.getEntriesByType('navigation')[0];
      return {
        domContentLoaded: Math.round(nav?.domContentLoadedEventEnd ?? NaN),
        connect: at('modemfleet:connect'),
        snapshot: at('modemfleet:snapshot'),
        rendered: at('modemfleet:rendered'),
        painted: at('modemfleet:painted'),
        complete: at('modemfleet:complete'),
        seen: Math.round(window.__firstSeen ?? NaN),
      };
    })()`);
    return { ms, marks };
  } finally {
    await page.close();
  }
}

export async function farmRun(sql: Sql, url: string, s: FarmScenario): Promise<FarmFigures> {
  const total = s.hosts * s.modemsPerHost;
  const store = new Store({ sql, url, hostId: 'bench-coordinator' });
  const inspectorSettings: FarmInspectorSettings = {
    url,
    token: TOKEN,
    // the clients come from one address: the caps are raised by configuration, not bypassed
    maxClients: s.clients + 10,
  };
  const inspectorChild = forkTs('farmInspector.ts', { MF_FARM_INSPECTOR: JSON.stringify(inspectorSettings) });
  const listener = forkTs('farmListener.ts', { MF_FARM_LISTENER: url });
  const hosts: { id: string; child: ChildProcess }[] = [];
  const clients = forkTs('farmClients.ts');
  let browser: Browser | null = null;
  let halt = false;
  let background: Promise<void> = Promise.resolve();
  const ask = (
    h: ChildProcess,
    m: FarmHostRequest | FarmClientsRequest | FarmInspectorRequest | FarmListenerRequest,
  ): void => {
    if (h.connected) h.send(m);
  };
  try {
    const inspector = await waitFor<Extract<FarmInspectorReply, { type: 'started' }>>(
      inspectorChild,
      'started',
      60_000,
    );
    await waitFor<FarmListenerReply>(listener, 'started', 60_000);
    // ---- boot: every host at once, until every modem is online ----
    const t0 = performance.now();
    const seqs = new Map<string, number>();
    if (s.synthetic) await journalSynthetic(store, s, seqs);
    for (let h = 0; h < (s.synthetic ? 0 : s.hosts); h++) {
      const id = `h${String(h + 1).padStart(2, '0')}`;
      const settings: FarmHostSettings = {
        url,
        hostId: id,
        modems: s.modemsPerHost,
        seed: h + 1,
        poolMax: s.poolMax,
        signalPollMs: 30_000,
      };
      hosts.push({ id, child: forkTs('farmHost.ts', { MF_FARM_HOST: JSON.stringify(settings) }) });
    }
    await Promise.all(hosts.map((h) => waitFor<FarmHostReply>(h.child, 'started', 300_000)));
    const deadline = Date.now() + 600_000;
    for (;;) {
      const [row] = await sql<{ n: number }[]>`select count(*)::int as n from modems where state = 'online'`;
      if ((row?.n ?? 0) >= total) break;
      if (Date.now() > deadline) throw new Error(`only ${row?.n} of ${total} online`);
      await sleep(100);
    }
    const bootSeconds = s.synthetic ? NaN : Number(((performance.now() - t0) / 1000).toFixed(2));
    await sleep(2_000); // the boot's last journal and health writes

    // ---- the clients: one alone (the snapshot's time), then all at once ----
    const wsUrl = `${inspector.url.replace('http', 'ws')}/ws?token=${TOKEN}`;
    ask(clients, { type: 'connect', url: wsUrl, n: 1 });
    const one = await waitFor<Extract<FarmClientsReply, { type: 'connected' }>>(clients, 'connected', 60_000);
    ask(clients, { type: 'connect', url: wsUrl, n: s.clients - 1 });
    const burst = await waitFor<Extract<FarmClientsReply, { type: 'connected' }>>(
      clients,
      'connected',
      120_000,
    );
    await sleep(1_000);

    if (s.page) browser = await launchBrowser();

    // ---- the window: background load; HTTP figures, connections and CPU measured in it ----
    const imeis = (await sql<{ imei: string }[]>`select imei from modems`).map((r) => r.imei);
    const cpu0 = await Promise.all(
      hosts.map(async (h) => {
        ask(h.child, { type: 'cpu' });
        return waitFor<Extract<FarmHostReply, { type: 'cpu' }>>(h.child, 'cpu', 30_000);
      }),
    );
    ask(listener, { type: 'window', on: true });
    ask(listener, { type: 'record', on: true });
    ask(inspectorChild, { type: 'loop', on: true });
    const windowStart = performance.now();
    const windowEnd = windowStart + s.windowSeconds * 1000;
    let rotations = 0;
    let unplugs = 0;
    const rotateEveryMs = 60_000 / Math.max(1, total * s.rotationsPerMinute);
    const connections = { max: 0, byApp: {} as Record<string, number> };
    background = (async () => {
      let nextRotate = windowStart;
      let nextUnplug = windowStart + 3_000;
      let nextSample = windowStart;
      let k = 0;
      while (!halt && performance.now() < windowEnd) {
        const t = performance.now();
        if (t >= nextRotate) {
          nextRotate += rotateEveryMs;
          const imei = imeis[(k++ * 7919) % imeis.length];
          if (imei && s.synthetic) {
            await rotateSynthetic(store, imei, seqs);
            rotations++;
          } else if (imei)
            await store
              .insertCommand(imei, 'rotate', 'bench')
              .then(() => rotations++)
              .catch(() => undefined);
        }
        if (t >= nextUnplug) {
          nextUnplug += 5_000;
          const h = hosts[unplugs % hosts.length];
          const i = (unplugs * 31) % s.modemsPerHost;
          unplugs++;
          if (h) {
            ask(h.child, { type: 'unplug', i });
            setTimeout(() => ask(h.child, { type: 'replug', i }), 2_000).unref();
          }
        }
        if (t >= nextSample) {
          nextSample += 1_000;
          const rows = await sql<{ app: string; n: number }[]>`
            select coalesce(nullif(application_name, ''), backend_type) as app, count(*)::int as n
            from pg_stat_activity where datname = current_database() group by 1`;
          const n = rows.reduce((a, r) => a + r.n, 0);
          if (n > connections.max) {
            connections.max = n;
            connections.byApp = Object.fromEntries(rows.map((r) => [r.app, r.n]));
          }
        }
        await sleep(Math.max(1, Math.min(nextRotate, nextUnplug, nextSample, windowEnd) - performance.now()));
      }
    })();
    // HTTP figures halfway, under the background
    await sleep(Math.min(3_000, (s.windowSeconds * 1000) / 4));
    const api = await fetchTimed(`${inspector.url}/api/modems`);
    // (the code before paging answers 400: no figure)
    const apiPage = await fetchTimed(`${inspector.url}/api/modems?limit=100`).catch(() => ({ ms: NaN }));
    const metrics1 = await fetchTimed(`${inspector.url}/metrics`, false);
    await sleep(2_000); // past metricsCacheMs: the second one renders again
    const metrics2 = await fetchTimed(`${inspector.url}/metrics`, false);
    const pageRender = browser ? await pageFirstRender(browser, inspector.url) : null;
    await background;
    const cpu1 = await Promise.all(
      hosts.map(async (h) => {
        ask(h.child, { type: 'cpu' });
        return waitFor<Extract<FarmHostReply, { type: 'cpu' }>>(h.child, 'cpu', 30_000);
      }),
    );
    ask(listener, { type: 'window', on: false });
    ask(inspectorChild, { type: 'loop', on: false });
    const loop = await waitFor<Extract<FarmInspectorReply, { type: 'loop' }>>(inspectorChild, 'loop', 30_000);
    await sleep(1_000); // the last notifications reach the clients
    ask(listener, { type: 'record', on: false });
    ask(listener, { type: 'report' });
    const heard = await waitFor<Extract<FarmListenerReply, { type: 'report' }>>(listener, 'report', 60_000);
    const { lags: allLags, windowLags, notified } = heard;
    const [maxConn] = await sql<{ max_connections: string }[]>`show max_connections`;
    ask(clients, { type: 'report', notified });
    const report = await waitFor<Extract<FarmClientsReply, { type: 'report' }>>(clients, 'report', 120_000);
    const cpuPerHost = Object.fromEntries(
      hosts.map((h, i) => {
        const a = cpu0[i];
        const b = cpu1[i];
        const share =
          a && b
            ? (b.userUs + b.systemUs - a.userUs - a.systemUs) / 1000 / Math.max(1, b.atMs - a.atMs)
            : NaN;
        return [h.id, Number(share.toFixed(4))];
      }),
    );
    return {
      modems: total,
      hosts: s.hosts,
      clients: s.clients,
      poolMax: s.poolMax,
      bootSeconds,
      journalLagP50Ms: percentile(allLags, 50),
      journalLagP99Ms: percentile(allLags, 99),
      journalLagSamples: allLags.length,
      windowJournalLagP99Ms: percentile(windowLags, 99),
      windowJournalLagSamples: windowLags.length,
      wsP50Ms: percentile(report.latencies, 50),
      wsP99Ms: percentile(report.latencies, 99),
      wsSamples: report.latencies.length,
      wsLost: report.lost,
      snapshotMs: Number((one.snapshotMs[0] ?? NaN).toFixed(1)),
      snapshotBurstMaxMs: Number(Math.max(...burst.snapshotMs).toFixed(1)),
      snapshotBytes: one.snapshotBytes,
      apiModemsMs: api.ms,
      apiModemsBytes: api.bytes,
      apiPageMs: Number.isNaN(apiPage.ms) ? null : apiPage.ms,
      metricsMs: Math.max(metrics1.ms, metrics2.ms),
      metricsBytes: metrics2.bytes,
      connections: connections.max,
      connectionsByApplication: connections.byApp,
      maxConnections: Number(maxConn?.max_connections ?? NaN),
      cpuPerHost,
      cpuPerHostMax: s.synthetic ? NaN : Math.max(...Object.values(cpuPerHost)),
      rotationsRequested: rotations,
      unplugs,
      pageFirstRenderMs: pageRender?.ms ?? null,
      pageMarks: pageRender?.marks ?? null,
      inspectorLoopDelayP99Ms: loop.p99Ms,
      inspectorLoopDelayMaxMs: loop.maxMs,
    };
  } catch (err) {
    console.error('farm run failed:', err);
    throw err;
  } finally {
    halt = true;
    await background.catch(() => undefined);
    ask(clients, { type: 'stop' });
    await Promise.all(
      hosts.map(async (h) => {
        if (h.child.exitCode !== null) return;
        const exited = new Promise((resolve) => h.child.once('exit', resolve));
        ask(h.child, { type: 'stop' });
        await Promise.race([exited, sleep(30_000)]);
        if (h.child.exitCode === null) h.child.kill('SIGKILL');
      }),
    );
    if (clients.exitCode === null) clients.kill();
    await browser?.close().catch(() => undefined);
    ask(listener, { type: 'stop' });
    const inspectorExited = new Promise((resolve) => inspectorChild.once('exit', resolve));
    ask(inspectorChild, { type: 'stop' });
    await Promise.race([inspectorExited, sleep(30_000)]);
    for (const child of [inspectorChild, listener]) if (child.exitCode === null) child.kill('SIGKILL');
  }
}

const ROTATION = [
  'online.rotating.detaching',
  'online.rotating.detached',
  'online.rotating.attaching',
  'online.rotating.registering',
  'online.rotating.connecting',
  'online.serving',
];

/** The synthetic farm's modems: host h01..hNN, journaled detecting → online.serving. */
async function journalSynthetic(store: Store, s: FarmScenario, seqs: Map<string, number>): Promise<void> {
  for (let h = 0; h < s.hosts; h++) {
    const host = `h${String(h + 1).padStart(2, '0')}`;
    const hostStore = new Store({ sql: store.sql, url: '', hostId: host });
    await hostStore.registerHost();
    const imeis = Array.from({ length: s.modemsPerHost }, (_, i) =>
      String(353_000_000_000_000 + h * 100_000 + i),
    );
    for (let i = 0; i < imeis.length; i += 500) {
      const at = new Date();
      await hostStore.appendTransitions(
        imeis.slice(i, i + 500).flatMap((imei) => [
          { imei, seq: 1, from: null, to: 'detecting.probing', event: 'start', at, host },
          {
            imei,
            seq: 2,
            from: 'detecting.probing',
            to: 'online.serving',
            event: 'device.ok',
            at,
            host,
            wanIp: '10.64.0.1',
          },
        ]),
      );
      for (const imei of imeis.slice(i, i + 500)) seqs.set(imei, 2);
    }
  }
}

async function rotateSynthetic(store: Store, imei: string, seqs: Map<string, number>): Promise<void> {
  const [row] = await store.sql<{ host_id: string }[]>`select host_id from modems where imei = ${imei}`;
  let seq = seqs.get(imei) ?? 0;
  let from = 'online.serving';
  const at = new Date();
  const batch = ROTATION.map((to) => {
    const t = { imei, seq: ++seq, from, to, event: 'command.rotate', at, host: row?.host_id ?? 'h01' };
    from = to;
    return t;
  });
  seqs.set(imei, seq);
  await store.appendTransitions(batch);
}

export interface FarmComparison {
  /** 10 × 100 (quick: 4 × 50) against 1 × 1,000 (quick: 1 × 200): the same modems on many hosts. */
  many: FarmFigures;
  one: FarmFigures;
  /** journal lag p99, many hosts over one: target ≤ 1.5. */
  lagRatio: number;
  /** The full farm (10 × 1,000; quick: 4 × 100 with 10 clients). */
  full: FarmFigures;
}

/** The three scenarios, each in a fresh database (`withDatabase`). */
export async function farmBenchmark(
  withDatabase: <T>(fn: (sql: Sql, url: string) => Promise<T>) => Promise<T>,
  quick: boolean,
  size?: { hosts: number; modemsPerHost: number; clients: number; synthetic?: boolean },
): Promise<FarmComparison & { fullSize: string }> {
  const window = quick ? 20 : 60;
  const poolMax = 4;
  // 1 % a minute; in --quick's short window and small farms 10 %, so that the window has transitions to measure
  const rotationsPerMinute = quick ? 0.1 : 0.01;
  const sameModems = quick ? 200 : 1000;
  const manyHosts = quick ? 4 : 10;
  const one = await withDatabase((sql, url) =>
    farmRun(sql, url, {
      hosts: 1,
      modemsPerHost: sameModems,
      clients: 10,
      windowSeconds: window,
      poolMax,
      rotationsPerMinute,
    }),
  );
  const many = await withDatabase((sql, url) =>
    farmRun(sql, url, {
      hosts: manyHosts,
      modemsPerHost: sameModems / manyHosts,
      clients: 10,
      windowSeconds: window,
      poolMax,
      rotationsPerMinute,
    }),
  );
  const full =
    size ??
    (quick
      ? { hosts: 4, modemsPerHost: 100, clients: 10 }
      : { hosts: 10, modemsPerHost: 1000, clients: 100 });
  const fullFigures = await withDatabase((sql, url) =>
    farmRun(sql, url, { ...full, windowSeconds: window, poolMax, rotationsPerMinute, page: true }),
  );
  return {
    one,
    many,
    lagRatio: Number((many.journalLagP99Ms / one.journalLagP99Ms).toFixed(2)),
    full: fullFigures,
    fullSize: `${full.hosts} x ${full.modemsPerHost}`,
  };
}
