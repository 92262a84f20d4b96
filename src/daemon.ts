import type { Config } from './config.js';
import { ModemfleetError, coerceError } from './util/errors.js';
import { UdevadmSource, SysfsWatchSource, type HotplugSource } from './detect/hotplugSources.js';
import { SysfsWwanControl } from './net/wwan.js';
import { Supervisor, type SupervisorOptions } from './fleet/supervisor.js';
import { directInNamespace, probeInNamespace } from './net/nsProbe.js';
import type { Logger } from './log.js';
import type { Store } from './store/store.js';
import { openSystem } from './system.js';
import { findProgram } from './util/fs.js';
import { proxyRunDir } from './net/proxyRunDir.js';
import { shutdownSignal } from './util/signals.js';
import { Inspector, inspectorLimits } from './inspector/inspector.js';
import { loadApiToken, type ApiToken } from './inspector/token.js';
import { WebhookDispatcher, webhookPolicy } from './alerts/webhookDispatcher.js';
import { databaseStep, modemsLine, terminalProgress } from './util/progress.js';

async function hotplugSource(config: Config, log: Logger): Promise<HotplugSource | undefined> {
  switch (config.hotplug) {
    case 'udev':
      if (!(await findProgram('udevadm'))) {
        // without events the periodic rescan (every 30 s) finds new modems
        log.warn(
          'udevadm not found (apt-get install udev): hotplug falls back to rescanning sysfs every 30 s',
        );
        return undefined;
      }
      return new UdevadmSource({ log });
    case 'watch':
      return new SysfsWatchSource(config.scan.sysRoot);
    case 'none':
      return undefined;
  }
}

async function dataPlaneOptions(
  config: Config,
  log: Logger,
): Promise<NonNullable<SupervisorOptions['dataPlane']>> {
  const d = config.dataPlane;
  if (!d) throw new Error('no data plane configured');
  let backend: 'microsocks+tinyproxy' | '3proxy';
  let threeProxyPath: string | undefined;
  if (d.backend === 'microsocks+tinyproxy') backend = d.backend;
  else {
    threeProxyPath = await findProgram(config.threeProxyPath ?? '3proxy');
    if (threeProxyPath) backend = '3proxy';
    else if (d.backend === '3proxy')
      throw new ModemfleetError(
        'no_3proxy',
        `3proxy not found (${config.threeProxyPath ?? 'PATH'}): set MODEMFLEET_3PROXY, or dataPlane.backend "microsocks+tinyproxy"`,
      );
    else {
      backend = 'microsocks+tinyproxy';
      if (!(await findProgram('microsocks')) || !(await findProgram('tinyproxy')))
        throw new ModemfleetError(
          'no_proxy',
          "no proxy program found: install 3proxy (MODEMFLEET_3PROXY) or Debian's microsocks and tinyproxy",
        );
    }
  }
  log.info({ backend, threeProxyPath }, 'proxy backend');
  const netns = d.netns;
  return {
    netns,
    backend,
    threeProxyPath,
    listen: d.listen,
    prefix: d.prefix,
    runDir: await proxyRunDir(d.runDir, d.proxyUidBase !== undefined, log),
    dns: d.dns,
    rulePriorityBase: d.rulePriorityBase,
    proxyUidBase: d.proxyUidBase,
    egressPolicy: d.egressPolicy,
    openPortOffset: d.openPortOffset,
    ...(d.egress
      ? {
          egress: {
            ...d.egress,
            // ports inside a namespace are probed from inside it
            ...(netns
              ? {
                  probe: (p: { socksPort: number; user: string; password: string }, url: string) =>
                    probeInNamespace(netns, 'socks', p.socksPort, p.user, p.password, url),
                  probeDirect: (url: string) => directInNamespace(netns, url),
                }
              : {}),
          },
        }
      : {}),
  };
}

/**
 * A started supervisor (and inspector) on an open database; `stop()` shuts down in reverse order,
 * `handover` leaving the online modems' proxies serving for the next run (`Supervisor.stop`).
 */
export interface RunningDaemon {
  supervisor: Supervisor;
  inspector: Inspector | undefined;
  stop(options?: { handover?: boolean }): Promise<void>;
}

/**
 * The inspector of a daemon: its token from MODEMFLEET_API_TOKEN or the state dir (generated on
 * first start; where it is kept is printed, never the token).
 */
export async function startInspector(
  config: Config,
  store: Store,
  supervisor: Supervisor | undefined,
  log: Logger,
  print: (line: string) => void = (line) => process.stderr.write(`${line}\n`),
): Promise<{ inspector: Inspector; token: ApiToken } | undefined> {
  if (!config.http) return undefined;
  const token = await loadApiToken(config.stateDir, config.apiToken);
  // the token's file, never the token: this line ends up in the journal, readable by more people
  if (token.source === 'generated')
    print(
      `modemfleet: generated an API token (kept in ${token.file}, mode 0600; read it there, it is not printed)`,
    );
  const inspector = new Inspector({
    store,
    host: config.http.host,
    port: config.http.port,
    token: token.token,
    ...(supervisor ? { supervisor } : {}),
    limits: inspectorLimits(config.policy),
    allowedHosts: config.allowedHosts,
    listenHeartbeatIntervalMs: config.policy.listenHeartbeatIntervalMs,
    listenHeartbeatTimeoutMs: config.policy.listenHeartbeatTimeoutMs,
    log,
  });
  try {
    await inspector.start();
  } catch (err) {
    await inspector.stop().catch(() => undefined);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL')
      throw new ModemfleetError(
        'http_unavailable',
        `the inspector cannot listen on ${config.http.host}:${config.http.port} (${code}); set "http" in the config or MODEMFLEET_HTTP`,
        { cause: err },
      );
    throw err;
  }
  return { inspector, token };
}

/** Push alerts of this host: the config's webhooks kept in the table, then the delivery worker. */
export async function startWebhooks(config: Config, store: Store, log: Logger): Promise<WebhookDispatcher> {
  // hosts without a `webhooks` key leave the farm's config webhooks as they are
  if (config.webhooks) await store.syncConfigWebhooks(config.webhooks);
  const dispatcher = new WebhookDispatcher({
    store,
    policy: webhookPolicy(config.policy),
    heartbeatIntervalMs: config.policy.listenHeartbeatIntervalMs,
    heartbeatTimeoutMs: config.policy.listenHeartbeatTimeoutMs,
    log,
  });
  await dispatcher.start();
  return dispatcher;
}

export async function startDaemon(config: Config, log: Logger): Promise<RunningDaemon> {
  let supervisor: Supervisor | undefined;
  const system = await openSystem(config, {
    application: 'modemfleet',
    max: config.policy.databasePoolMax,
    migrations: 'apply',
    checkListen: true,
    // the embedded server dying (OOM killer, crash) must not leave the farm spooling forever
    embedded: {
      supervise: {
        onExit: (detail) =>
          supervisor?.events.emit('alert', {
            alert: {
              kind: 'database_restarted',
              severity: 'critical',
              message: `${detail}; started again (the journal spooled meanwhile)`,
            },
          }),
      },
    },
    log,
  });
  let inspector: Inspector | undefined;
  let webhooks: WebhookDispatcher | undefined;
  try {
    const store = system.store;
    const hotplug = await hotplugSource(config, log);
    supervisor = new Supervisor({
      store,
      stateDir: config.stateDir,
      scan: config.scan,
      ...(hotplug ? { hotplug } : {}),
      // the USB-level reset rung is on unless the config turns it off (it needs root and /sys)
      modem: { usbReset: true, ...config.modem },
      link: {
        apn: config.apn,
        apnByOperator: config.apnByOperator,
        switchUsbnet: config.switchUsbnet,
        mtu: config.mtu,
        powerCycleCommand: config.powerCycleCommand,
        // with a data plane the qmi_wwan links are ours: raw-IP, link state and MTU through sysfs
        ...(config.dataPlane?.qmiLinks
          ? { wwan: new SysfsWwanControl({ netns: config.dataPlane.netns }) }
          : {}),
      },
      spool: { fsync: config.spoolFsync, maxBytes: config.spoolMaxBytes },
      ...(config.dataPlane ? { dataPlane: await dataPlaneOptions(config, log) } : {}),
      policy: config.policy,
      ...(config.proxyHost ? { proxyHost: config.proxyHost } : {}),
      rotationSchedule: config.rotation.schedule,
      noReuse: config.rotation.noReuse,
      // our own egress probes (this uid) are not a customer's bytes
      ...(config.dataPlane?.trafficAccounting ? { traffic: { probeUid: process.geteuid?.() ?? null } } : {}),
      log,
    });
    await supervisor.start();
    webhooks = await startWebhooks(config, store, log);
    inspector = (await startInspector(config, store, supervisor, log))?.inspector;
  } catch (err) {
    await webhooks?.stop().catch(() => undefined);
    await supervisor?.stop().catch(() => undefined);
    await system.stop();
    throw err;
  }
  const running = supervisor;
  const http = inspector;
  const dispatcher = webhooks;
  return {
    supervisor: running,
    inspector: http,
    async stop(options = {}) {
      const failures: unknown[] = [];
      await http?.stop().catch((err: unknown) => failures.push(err));
      await dispatcher.stop().catch((err: unknown) => failures.push(err));
      await running.stop(options).catch((err: unknown) => failures.push(err));
      await system.stop().catch((err: unknown) => failures.push(err));
      if (failures.length) throw new AggregateError(failures, 'shutdown failed');
    },
  };
}

/**
 * `modemfleet run`: the supervisor until SIGINT/SIGTERM. Resolves with the exit code.
 * SIGTERM (systemd's stop and restart, an upgrade) hands over: the supervisor stops, the online
 * modems' proxies keep serving with their routing and egress admission, and the next run adopts
 * them, so customers' open connections survive. SIGINT (Ctrl-C) is a full stop: proxies, routing
 * and the egress policy go too. A second signal of either exits at once.
 */
export async function runDaemon(config: Config, log: Logger): Promise<number> {
  const signal = shutdownSignal(log);
  const progress = terminalProgress();
  let watch: NodeJS.Timeout | undefined;
  try {
    progress(databaseStep(config));
    const daemon = await startDaemon(config, log);
    progress(`running${daemon.inspector ? ` (inspector ${daemon.inspector.url})` : ''}; looking for modems`);
    // on a terminal, where the modems are for the first two minutes (journald gets the logs only)
    const until = Date.now() + 120_000;
    watch = setInterval(() => {
      const modems = daemon.supervisor.status().localModems;
      if (Object.keys(modems).length) progress(modemsLine(modems));
      if (Date.now() > until) clearInterval(watch);
    }, 1_000);
    watch.unref();
    log.info(
      {
        hostId: config.hostId,
        stateDir: config.stateDir,
        ...(daemon.inspector ? { inspector: daemon.inspector.url } : {}),
      },
      'modemfleet is running',
    );
    const received = await signal.received;
    clearInterval(watch);
    const handover = received === 'SIGTERM';
    try {
      await daemon.stop({ handover });
      log.info(
        { signal: received, proxies: handover ? 'left serving for the next run' : 'stopped' },
        'modemfleet stopped',
      );
      return 0;
    } catch (err) {
      log.error({ err: coerceError(err) }, 'modemfleet stopped with errors');
      return 1;
    }
  } finally {
    clearInterval(watch);
    signal.dispose();
  }
}
