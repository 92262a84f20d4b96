import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from './config.js';
import { ModemfleetError, coerceError } from './util/errors.js';
import { UdevadmSource, SysfsWatchSource, type HotplugSource } from './detect/hotplugSources.js';
import { Supervisor, type SupervisorOptions } from './fleet/supervisor.js';
import { probeInNamespace } from './net/nsProbe.js';
import type { Logger } from './log.js';
import { Database } from './store/database.js';
import { migrate } from './store/migrate.js';
import { Store } from './store/store.js';
import { shutdownSignal } from './util/signals.js';

function hotplugSource(config: Config, log: Logger): HotplugSource | undefined {
  switch (config.hotplug) {
    case 'udev':
      return new UdevadmSource({ log });
    case 'watch':
      return new SysfsWatchSource(config.scan.sysRoot);
    case 'none':
      return undefined;
  }
}

/** The program on PATH (or the given path) exists and is executable. */
async function findProgram(name: string): Promise<string | undefined> {
  const candidates = name.includes('/')
    ? [name]
    : (process.env['PATH'] ?? '').split(':').map((d) => join(d, name));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
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
    runDir: d.runDir,
    dns: d.dns,
    rulePriorityBase: d.rulePriorityBase,
    proxyUidBase: d.proxyUidBase,
    ...(d.egress
      ? {
          egress: {
            ...d.egress,
            // ports inside a namespace are probed from inside it
            ...(netns
              ? {
                  probe: (p: { socksPort: number; user: string; password: string }, url: string) =>
                    probeInNamespace(netns, 'socks', p.socksPort, p.user, p.password, url),
                }
              : {}),
          },
        }
      : {}),
  };
}

/** A started supervisor on an open database; `stop()` shuts both down in reverse order. */
export interface RunningDaemon {
  supervisor: Supervisor;
  stop(): Promise<void>;
}

export async function startDaemon(config: Config, log: Logger): Promise<RunningDaemon> {
  const db = new Database({
    url: config.databaseUrl,
    stateDir: config.stateDir,
    embeddedPort: config.embeddedPort,
    connectAttempts: config.policy.databaseConnectAttempts,
    max: 8,
    application: 'modemfleet',
    log,
  });
  await db.start();
  let supervisor: Supervisor | undefined;
  try {
    await migrate(db.sql, { log });
    const store = new Store({
      sql: db.sql,
      url: db.url,
      hostId: config.hostId,
      ranges: config.allocation,
      log,
    });
    const hotplug = hotplugSource(config, log);
    supervisor = new Supervisor({
      store,
      stateDir: config.stateDir,
      scan: config.scan,
      ...(hotplug ? { hotplug } : {}),
      modem: config.modem,
      link: {
        apn: config.apn,
        powerCycleCommand: config.powerCycleCommand,
      },
      spool: { fsync: config.spoolFsync, maxBytes: config.spoolMaxBytes },
      ...(config.dataPlane ? { dataPlane: await dataPlaneOptions(config, log) } : {}),
      healthRetentionSeconds: config.policy.healthRetentionSeconds,
      log,
    });
    await supervisor.start();
  } catch (err) {
    await supervisor?.stop().catch(() => undefined);
    await db.stop();
    throw err;
  }
  const running = supervisor;
  return {
    supervisor: running,
    async stop() {
      const failures: unknown[] = [];
      await running.stop().catch((err: unknown) => failures.push(err));
      await db.stop().catch((err: unknown) => failures.push(err));
      if (failures.length) throw new AggregateError(failures, 'shutdown failed');
    },
  };
}

/** `modemfleet run`: the supervisor until SIGINT/SIGTERM. Resolves with the exit code. */
export async function runDaemon(config: Config, log: Logger): Promise<number> {
  const signal = shutdownSignal(log);
  try {
    const daemon = await startDaemon(config, log);
    log.info({ hostId: config.hostId, stateDir: config.stateDir }, 'modemfleet is running');
    await signal.received;
    try {
      await daemon.stop();
      log.info('modemfleet stopped');
      return 0;
    } catch (err) {
      log.error({ err: coerceError(err) }, 'modemfleet stopped with errors');
      return 1;
    }
  } finally {
    signal.dispose();
  }
}
