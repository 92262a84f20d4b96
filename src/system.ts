import { join } from 'node:path';
import type { Config } from './config.js';
import { silentLogger, type Logger } from './log.js';
import { EmbeddedCluster } from './process/embeddedCluster.js';
import { Database, type Sql } from './store/database.js';
import { migrate, verifyMigrations } from './store/migrate.js';
import { checkListen } from './store/listenCheck.js';
import { Store } from './store/store.js';
import { coerceError } from './util/errors.js';

/**
 * The one system builder: PostgreSQL (DATABASE_URL, else the embedded server in
 * `<stateDir>/postgres`) → connection pool → migrations → Store. The daemon, the demo and the
 * one-shot commands (status, rotate, migrate, doctor, ...) all open their database through it, and
 * `stop()` closes it in reverse order.
 */
export type SystemConfig = Pick<
  Config,
  'databaseUrl' | 'stateDir' | 'embeddedPort' | 'hostId' | 'allocation' | 'policy'
> &
  Partial<Pick<Config, 'databaseListenUrl'>>;

export interface SystemOptions {
  /** `application_name` of the pool's connections (shows in pg_stat_activity). */
  application: string;
  /** Pool size. */
  max: number;
  /**
   * The schema: `apply` every pending migration (daemon, demo); `check` refuses an applied migration
   * that changed and applies pending ones only when there are any (one-shot commands); `none` leaves
   * it alone (the `migrate` command applies them itself, `doctor` only looks).
   */
  migrations: 'apply' | 'check' | 'none';
  /**
   * The embedded server (unused with DATABASE_URL): `own` starts it and refuses one that another
   * live modemfleet process runs (`pg_in_use`); `attach` uses that one instead, or starts its own;
   * `running` (one-shot commands) only uses the one a running modemfleet owns, touching nothing in
   * the state dir, and says at once when there is none (`no_farm_running`); `stopped` (restore)
   * refuses a running farm and starts the existing cluster for the command alone, changing nothing
   * the service owns; `either` (backup) is `running`, else `stopped`; `supervise` owns it and starts it again when it dies on its own (the
   * daemon), calling `onExit` with the reason first.
   */
  embedded:
    | 'own'
    | 'attach'
    | 'running'
    | 'stopped'
    | 'either'
    | { supervise: { onExit?: (detail: string) => void } };
  /** Connection attempts before `database_unreachable`; default `policy.databaseConnectAttempts`. */
  connectAttempts?: number;
  /**
   * Before the store is handed out: a NOTIFY round trip on the listen connection, refused with
   * `listen_unusable` (exit 4) through a transaction-mode pooler (src/store/listenCheck.ts). For
   * whoever LISTENs (the daemon, the demo); one-shot commands do not.
   */
  checkListen?: boolean;
  log?: Logger;
}

export class System {
  /** The embedded server, when DATABASE_URL is not set. */
  cluster: EmbeddedCluster | undefined;
  private database: Database | undefined;
  private opened: Store | undefined;
  private readonly log: Logger;

  constructor(
    private readonly config: SystemConfig,
    private readonly options: SystemOptions,
  ) {
    this.log = options.log ?? silentLogger;
  }

  /** The pool (after start()). */
  get db(): Database {
    if (!this.database) throw new Error('system not started');
    return this.database;
  }

  get sql(): Sql {
    return this.db.sql;
  }

  get url(): string {
    return this.db.url;
  }

  get store(): Store {
    if (!this.opened) throw new Error('system not started');
    return this.opened;
  }

  /** Server, pool, migrations, store; on a failure everything started is stopped again. */
  async start(): Promise<void> {
    const { config, options, log } = this;
    try {
      let url = config.databaseUrl;
      if (!url) {
        const embedded = options.embedded;
        this.cluster = new EmbeddedCluster({
          dir: join(config.stateDir, 'postgres'),
          port: config.embeddedPort,
          log,
          attach:
            embedded === 'running'
              ? 'only'
              : embedded === 'stopped' || embedded === 'either'
                ? embedded
                : embedded === 'attach',
          ...(typeof embedded === 'object'
            ? {
                restart: true,
                ...(embedded.supervise.onExit ? { onUnexpectedExit: embedded.supervise.onExit } : {}),
              }
            : {}),
        });
        await this.cluster.start();
        url = this.cluster.url;
      }
      this.database = new Database({
        url,
        connectAttempts: options.connectAttempts ?? config.policy.databaseConnectAttempts,
        max: options.max,
        application: options.application,
        // a separate listen connection means the pool goes through a pooler: no named statements
        ...(config.databaseListenUrl ? { prepare: false } : {}),
        log,
      });
      await this.database.start();
      if (options.migrations === 'apply') await migrate(this.database.sql, { log });
      else if (options.migrations === 'check') {
        // refuses (naming the file) when an applied migration changed; applies what is pending
        const { pending } = await verifyMigrations(this.database.sql);
        if (pending > 0) await migrate(this.database.sql, { log });
      }
      const listenUrl = config.databaseListenUrl ?? url;
      if (options.checkListen)
        await checkListen(this.database.sql, listenUrl, {
          listenSetting: config.databaseListenUrl
            ? 'DATABASE_LISTEN_URL'
            : config.databaseUrl
              ? 'DATABASE_URL'
              : 'the embedded server',
        });
      this.opened = new Store({
        sql: this.database.sql,
        url,
        listenUrl,
        hostId: config.hostId,
        ranges: config.allocation,
        scheduleMinSeconds: config.policy.rotationScheduleMinSeconds,
        commandQueueMax: config.policy.commandQueueMax,
        log,
      });
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Pool, then the embedded server (after everything using the store has stopped). Idempotent. */
  async stop(): Promise<void> {
    this.opened = undefined;
    const database = this.database;
    this.database = undefined;
    await database?.stop(); // logs its own failure
    const cluster = this.cluster;
    this.cluster = undefined;
    try {
      await cluster?.stop();
    } catch (err) {
      this.log
        .child({ component: 'database' })
        .warn({ err: coerceError(err) }, 'stopping the embedded cluster failed');
    }
  }
}

/** A started System (everything already stopped again when it fails to start). */
export async function openSystem(config: SystemConfig, options: SystemOptions): Promise<System> {
  const system = new System(config, options);
  await system.start();
  return system;
}

/** Opens the system for one piece of work (a one-shot command), runs `fn`, closes it again. */
export async function withSystem<T>(
  config: SystemConfig,
  options: SystemOptions,
  fn: (system: System) => Promise<T>,
): Promise<T> {
  const system = await openSystem(config, options);
  try {
    return await fn(system);
  } finally {
    await system.stop();
  }
}
