import type { Config } from './config.js';
import { UdevadmSource, SysfsWatchSource, type HotplugSource } from './detect/hotplugSources.js';
import { Supervisor, type SupervisorOptions } from './fleet/supervisor.js';
import { probeInNamespace } from './net/nsProbe.js';
import type { Logger } from './log.js';
import { Database } from './store/database.js';
import { migrate } from './store/migrate.js';
import { Store } from './store/store.js';
import { coerceError } from './util/errors.js';
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

function dataPlaneOptions(config: Config): NonNullable<SupervisorOptions['dataPlane']> {
  const d = config.dataPlane;
  if (!d) throw new Error('no data plane configured');
  const netns = d.netns;
  return {
    netns,
    backend: d.backend,
    threeProxyPath: config.threeProxyPath,
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
      ...(config.dataPlane ? { dataPlane: dataPlaneOptions(config) } : {}),
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
