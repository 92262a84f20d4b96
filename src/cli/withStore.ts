import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { Database } from '../store/database.js';
import { migrate, verifyMigrations } from '../store/migrate.js';
import { Store } from '../store/store.js';

/**
 * Open the database for a one-shot command (next to a running daemon, its embedded cluster is
 * shared), check the schema, run `fn`, and close everything again.
 */
export async function withStore<T>(
  config: Config,
  log: Logger,
  fn: (store: Store, db: Database) => Promise<T>,
  options: { autoMigrate?: boolean } = { autoMigrate: true },
): Promise<T> {
  const db = new Database({
    url: config.databaseUrl,
    stateDir: config.stateDir,
    embeddedPort: config.embeddedPort,
    connectAttempts: config.policy.databaseConnectAttempts,
    attachEmbedded: true,
    max: 4,
    application: 'modemfleet-cli',
    log,
  });
  await db.start();
  try {
    if (options.autoMigrate) {
      // refuses (naming the file) when an applied migration changed; applies what is pending
      const { pending } = await verifyMigrations(db.sql);
      if (pending > 0) await migrate(db.sql, { log });
    }
    const store = new Store({
      sql: db.sql,
      url: db.url,
      hostId: config.hostId,
      ranges: config.allocation,
      log,
    });
    return await fn(store, db);
  } finally {
    await db.stop();
  }
}
