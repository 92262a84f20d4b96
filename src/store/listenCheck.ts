import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { connectionOptions, describeUrl } from './database.js';

/** How long the start-up round trip waits for its notification. */
export const LISTEN_CHECK_MS = 3_000;

const CHANNEL = 'modemfleet_listen_check';

/**
 * LISTEN needs a session: through a transaction-mode pooler (PgBouncer `pool_mode = transaction` or
 * `statement`) the LISTEN lands on a server connection that goes back to the pool when the
 * statement ends, and notifications never reach us; the farm would look alive and see no command.
 * So before anything listens, one round trip: LISTEN on a connection opened the way the listeners
 * open theirs (`listenUrl`), NOTIFY through the pool, and the notification must arrive within
 * `timeoutMs`; else `listen_unusable` (exit code 4), naming the connection and what to set.
 * `listenSetting` names where `listenUrl` came from (`DATABASE_LISTEN_URL`, `DATABASE_URL`).
 */
export async function checkListen(
  pool: Sql,
  listenUrl: string,
  options: { listenSetting: string; timeoutMs?: number },
): Promise<void> {
  const timeoutMs = options.timeoutMs ?? LISTEN_CHECK_MS;
  const token = randomBytes(8).toString('hex');
  const where = `the listen connection (${options.listenSetting}: ${describeUrl(listenUrl)})`;
  const root = postgres(listenUrl, {
    ...connectionOptions({ max: 1, application: 'modemfleet-listen-check', url: listenUrl }),
    backoff: () => 1,
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    let heard: () => void = () => undefined;
    const received = new Promise<void>((resolve) => (heard = resolve));
    try {
      await root.listen(CHANNEL, (payload) => {
        if (payload === token) heard();
      });
    } catch (err) {
      throw new ModemfleetError('listen_unusable', `LISTEN failed on ${where}: ${coerceError(err).message}`, {
        cause: err,
      });
    }
    await pool`select pg_notify(${CHANNEL}, ${token})`;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), timeoutMs)));
    if ((await Promise.race([received, late])) === 'late')
      throw new ModemfleetError(
        'listen_unusable',
        `${where} did not receive a NOTIFY sent through the pool within ${timeoutMs / 1000} s: LISTEN ` +
          'needs a session of its own, and this connection goes through a transaction-mode pooler ' +
          '(PgBouncer pool_mode=transaction or statement). Set DATABASE_LISTEN_URL (config ' +
          '"databaseListenUrl") to a direct connection to PostgreSQL, or to a session-mode pool',
      );
  } finally {
    clearTimeout(timer);
    await root.end({ timeout: 1 }).catch(() => undefined);
  }
}
