import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Config } from './config.js';
import { startInspector, startWebhooks } from './daemon.js';
import { EchoServer } from './echo.js';
import { Supervisor } from './fleet/supervisor.js';
import type { Logger } from './log.js';
import { defaultProfiles, timingProfile, type TimingName } from './sim/profiles.js';
import { SimLab } from './sim/simLab.js';
import { openSystem } from './system.js';
import { ModemfleetError, coerceError } from './util/errors.js';
import { findProgram } from './util/fs.js';
import { CAP, canChangeUser, hasCapability } from './process/run.js';
import { proxyRunDir } from './net/proxyRunDir.js';
import { shutdownSignal } from './util/signals.js';
import { databaseStep, modemsLine, terminalProgress } from './util/progress.js';
import { sleep } from './util/time.js';

/** The demo's simulated internet (its echo server): the one address its ports may reach. */
export const DEMO_INTERNET = '127.0.0.2';
/** The demo's proxies run as 61000 + slot, like the daemon's default. */
export const DEMO_PROXY_UID_BASE = 61_000;

export interface DemoOptions {
  modems: number;
  /** Where the inspector listens (default 127.0.0.1:8080; port 0 picks a free one). */
  http: { host: string; port: number };
  proxy: 'auto' | '3proxy' | 'microsocks' | 'tinyproxy';
  /** Simulated modem timings: `fast` (default, milliseconds) or `realistic` (seconds, as in the field). */
  timing?: TimingName;
  /** Printed lines go here (stdout); logs go to the logger. */
  print: (line: string) => void;
}

async function backend(
  config: Config,
  proxy: DemoOptions['proxy'],
): Promise<{ backend: '3proxy' | 'microsocks+tinyproxy'; path?: string }> {
  const threeProxy = config.threeProxyPath ?? ((await findProgram('3proxy')) ? '3proxy' : undefined);
  if ((proxy === 'auto' || proxy === '3proxy') && threeProxy) return { backend: '3proxy', path: threeProxy };
  if (proxy !== '3proxy' && (await findProgram('microsocks')) && (await findProgram('tinyproxy')))
    return { backend: 'microsocks+tinyproxy' };
  throw new ModemfleetError(
    'no_proxy',
    proxy === '3proxy'
      ? '3proxy not found: set MODEMFLEET_3PROXY to its path'
      : 'no proxy program found: run `bash scripts/setup.sh` (installs microsocks and tinyproxy) or set MODEMFLEET_3PROXY',
  );
}

/**
 * `modemfleet demo`: a farm on this machine without hardware, root or namespaces. PostgreSQL
 * (embedded unless DATABASE_URL), N simulated EC25s on PTYs in a fake sysfs (one without a SIM, one
 * that sometimes rotates to the same address), the supervisor with real proxy processes, and an echo
 * server: the modems' addresses are loopback addresses (127.0.1x.y), so each port visibly egresses
 * from its own address. Runs until SIGINT/SIGTERM, then stops everything it started.
 */
export async function runDemo(config: Config, options: DemoOptions, log: Logger): Promise<number> {
  const signal = shutdownSignal(log);
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async (): Promise<boolean> => {
    let ok = true;
    for (const stop of stops.reverse()) {
      try {
        await stop();
      } catch (err) {
        ok = false;
        log.error({ err: coerceError(err) }, 'demo shutdown step failed');
      }
    }
    return ok;
  };
  try {
    const proxy = await backend(config, options.proxy);
    const demoDir = join(config.stateDir, 'demo');
    await rm(demoDir, { recursive: true, force: true });

    const progress = terminalProgress();
    progress(databaseStep(config));
    const system = await openSystem(config, {
      application: 'modemfleet-demo',
      max: config.policy.databasePoolMax,
      migrations: 'apply',
      embedded: 'own',
      log,
    });
    stops.push(() => system.stop());
    const { store } = system;
    progress(`PostgreSQL ready; starting ${options.modems} simulated modems`);

    // the simulated internet: the only address the demo's ports reach (the egress policy)
    const echo = new EchoServer({ host: DEMO_INTERNET, port: 0 });
    const echoUrl = echo.url(await echo.start());
    stops.push(() => echo.stop());

    const realistic = options.timing === 'realistic';
    const profiles = defaultProfiles(options.modems, 7).map((p, i) => ({
      ...p,
      subnet: `127.0.${10 + i}`,
      timings: realistic
        ? timingProfile('realistic')
        : { bootMs: 200, latencyMs: 5, attachMs: 800, resetMs: 1_000, callMs: 50, cfunMs: 20 },
      faults: {
        ...p.faults,
        ...(i === 2 ? { noSim: true } : {}),
        ...(i === 4 ? { sameAddress: 0.5 } : {}),
      },
    }));
    const lab = new SimLab({ dir: join(demoDir, 'lab'), profiles });
    await lab.start();
    stops.push(() => lab.stop());

    // the proxies under their own uids with no capabilities, and the kernel's egress policy, need
    // what root (or the systemd unit) holds; a developer's own account runs them unisolated
    const isolated = canChangeUser() && hasCapability(CAP.net_admin);
    if (!isolated)
      log.warn(
        'not root: the proxies run as this user and the egress policy is off (each port can reach this host)',
      );
    const supervisor = new Supervisor({
      store,
      stateDir: config.stateDir,
      proxyHost: '127.0.0.1',
      scan: lab.scan,
      hotplug: lab.hotplug(),
      modem: { signalPollMs: 10_000, detachMs: 1_000, registrationPollMs: 500 },
      spool: { fsync: 'never' },
      dataPlane: {
        routing: false,
        backend: proxy.backend,
        threeProxyPath: proxy.path,
        listen: '127.0.0.1',
        prefix: 32,
        runDir: await proxyRunDir(join(demoDir, 'run'), isolated, log),
        dns: [],
        rulePriorityBase: 1_000,
        ...(isolated
          ? {
              proxyUidBase: DEMO_PROXY_UID_BASE,
              egressPolicy: { allow: [DEMO_INTERNET], deny: [], internet: false },
            }
          : { egressPolicy: null }),
        egress: { url: echoUrl, intervalMs: 30_000 },
      },
      // traffic accounting and quotas need nftables, as the egress policy does
      // (in this host's own namespace: the table goes when the demo stops)
      ...(isolated ? { traffic: { probeUid: process.geteuid?.() ?? null, removeOnStop: true } } : {}),
      log,
    });
    await supervisor.start();
    stops.push(() => supervisor.stop());
    const webhooks = await startWebhooks(config, store, log);
    stops.push(() => webhooks.stop());

    const started = await startInspector(
      { ...config, http: options.http },
      store,
      supervisor,
      log,
      () => undefined,
    );
    if (!started) throw new Error('the demo needs the inspector');
    const { inspector, token } = started;
    stops.push(() => inspector.stop());

    // wait for the farm to settle (the modem without a SIM ends in error on purpose)
    const deadline = Date.now() + (realistic ? 90_000 : 30_000);
    let modems = await store.modems();
    // serving: online with its ports, its proxy listening on them (a modem's state is written
    // before its allocation is, and its proxy starts after both)
    const proxyServing = (imei: string): boolean =>
      [...supervisor.modems.values()].some((x) => x.imei === imei && x.proxyServing);
    const serving = (m: (typeof modems)[number]): boolean =>
      m.state === 'online' && !!m.httpPort && !!m.socksPort && proxyServing(m.imei);
    while (Date.now() < deadline && modems.filter(serving).length < options.modems - 1) {
      progress(modemsLine(countStates(modems)));
      await Promise.race([sleep(500), signal.received]);
      modems = await store.modems();
    }
    progress(modemsLine(countStates(modems)));
    const online = modems.filter(serving);
    options.print(
      `modemfleet demo: ${modems.length} simulated EC25 modems, ${online.length} online (proxy: ${proxy.backend})`,
    );
    options.print(
      isolated
        ? `each port reaches the simulated internet (${DEMO_INTERNET}) and nothing else on this host (proxies run as uid ${DEMO_PROXY_UID_BASE}+slot, no capabilities)`
        : 'not root: the proxies are not isolated (own uid, egress policy); run as root for that',
    );
    for (const m of modems)
      options.print(
        `  ${m.imei}  ${m.state.padEnd(9)} ${m.wanIp ?? '-'}  http ${m.httpPort ?? '-'}  socks ${m.socksPort ?? '-'}${m.reason ? `  (${m.reason})` : ''}`,
      );
    const first = online[0];
    if (first) {
      const row = (await store.allocations()).find((a) => a.imei === first.imei);
      if (row) {
        options.print('try (each port answers with its own modem address):');
        options.print(
          `  curl -x socks5://${row.proxyUser}:${row.proxyPassword}@127.0.0.1:${row.socksPort} ${echoUrl}`,
        );
        options.print(
          `  curl -x http://${row.proxyUser}:${row.proxyPassword}@127.0.0.1:${row.httpPort} ${echoUrl}`,
        );
      }
    }
    options.print(`inspector: ${inspector.url}/#token=${token.token}`);
    options.print(`API token: ${token.token}`);
    options.print(`  curl -H 'Authorization: Bearer ${token.token}' ${inspector.url}/api/modems`);
    // one-shot commands find this farm by its state dir (they default to the service's)
    options.print(
      `commands (another terminal): MODEMFLEET_STATE_DIR=${resolve(config.stateDir)} npx modemfleet status | rotate IMEI | reset IMEI | disable IMEI | enable IMEI`,
    );
    options.print('Ctrl-C stops everything');
    options.print('ready');
    await signal.received;
    return (await stopAll()) ? 0 : 1;
  } catch (err) {
    await stopAll();
    throw err;
  } finally {
    signal.dispose();
  }
}

const countStates = (modems: readonly { state: string }[]): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const m of modems) out[m.state] = (out[m.state] ?? 0) + 1;
  return out;
};
