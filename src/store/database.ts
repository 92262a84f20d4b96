import postgres, { type Sql } from 'postgres';
import { silentLogger, type Logger } from '../log.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { backoffDelay, sleep } from '../util/time.js';
import { describeDbError, errorCode, isRetryable } from './pgErrors.js';

export type { Sql };

export interface DatabaseOptions {
  /** DATABASE_URL, or the embedded server's URL (src/system.ts decides which). */
  url: string;
  log?: Logger;
  /** Pool size. */
  max?: number;
  /** Bounded retry while the server is unreachable. */
  connectAttempts?: number;
  connectBackoffMs?: number;
  connectBackoffCapMs?: number;
  application?: string;
}

/** A safe description of where a URL points: host, port and database, never credentials. */
export function describeUrl(url: string): string {
  const parsed = new URL(url);
  return `${parsed.hostname || 'localhost'}:${parsed.port || '5432'}${parsed.pathname || '/'}`;
}

/** Check a DATABASE_URL before using it; the error never echoes the URL (it may hold a password). */
export function validateDatabaseUrl(url: string): void {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new ModemfleetError(
      'database_url_invalid',
      'DATABASE_URL is not a valid URL; expected postgres://user:password@host:port/database',
    );
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new ModemfleetError(
      'database_url_invalid',
      `DATABASE_URL must start with postgres:// or postgresql:// (got ${parsed.protocol}//)`,
    );
  }
  if (!parsed.hostname && !parsed.searchParams.get('host')) {
    throw new ModemfleetError('database_url_invalid', 'DATABASE_URL has no host');
  }
  if (parsed.port && !/^\d+$/.test(parsed.port)) {
    throw new ModemfleetError('database_url_invalid', 'DATABASE_URL has an invalid port');
  }
}

/** postgres.js options shared by every connection we open. */
export function connectionOptions(
  options: { max?: number; application?: string } = {},
): postgres.Options<Record<string, postgres.PostgresType>> {
  return {
    max: options.max ?? 10,
    onnotice: () => {},
    connect_timeout: 5,
    idle_timeout: 0,
    // no type-fetch query on each new connection: if the server goes away during it, postgres.js
    // rejects it where nobody can catch it (an unhandled rejection ends the process); our queries
    // return no array types, which are all it is for
    fetch_types: false,
    connection: { application_name: options.application ?? 'modemfleet' },
    // int8 as number: our ids and sequence numbers stay far below 2^53
    types: {
      bigint: {
        to: 20,
        from: [20],
        serialize: (value: number) => String(value),
        parse: (value: string) => Number(value),
      },
    },
  };
}

/**
 * The connection pool to one PostgreSQL server (which server, and starting the embedded one, is
 * src/system.ts's business). start() waits for the server with a bounded retry and fails with one
 * clear line.
 */
export class Database {
  sql!: Sql;
  readonly url: string;
  private readonly options: DatabaseOptions;
  private readonly log: Logger;

  constructor(options: DatabaseOptions) {
    this.options = options;
    this.url = options.url;
    this.log = (options.log ?? silentLogger).child({ component: 'database' });
  }

  async start(): Promise<void> {
    validateDatabaseUrl(this.url);
    this.sql = postgres(this.url, connectionOptions(this.options));
    try {
      await waitForServer(this.sql, this.url, this.options, this.log);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    try {
      // Everything was flushed before this (journal, health, commands). After the server was
      // restarted under us, a postgres.js connection can linger until this timeout: keep it short.
      await this.sql?.end({ timeout: 1 });
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'closing the pool failed');
    }
  }
}

async function waitForServer(sql: Sql, url: string, options: DatabaseOptions, log: Logger): Promise<void> {
  const attempts = options.connectAttempts ?? 6;
  for (let attempt = 0; ; attempt++) {
    try {
      await sql`select 1`;
      return;
    } catch (err) {
      const where = describeUrl(url);
      if (!isRetryable(err)) {
        throw new ModemfleetError(
          'database_unavailable',
          `cannot use PostgreSQL at ${where}: ${describeDbError(err)}`,
          {
            cause: err,
          },
        );
      }
      if (attempt + 1 >= attempts) {
        throw new ModemfleetError(
          'database_unreachable',
          `cannot reach PostgreSQL at ${where} after ${attempts} attempts (${errorCode(err) ?? describeDbError(err)})`,
          { cause: err },
        );
      }
      const delay = backoffDelay(
        attempt,
        options.connectBackoffMs ?? 250,
        options.connectBackoffCapMs ?? 4_000,
        0.2,
      );
      log.warn(
        { where, code: errorCode(err), attempt: attempt + 1, attempts, delayMs: delay },
        'PostgreSQL unreachable, retrying',
      );
      await sleep(delay);
    }
  }
}

/** A postgres.js client with our connection options, for tools and tests. */
export function openSql(url: string, options: { max?: number; application?: string } = {}): Sql {
  validateDatabaseUrl(url);
  return postgres(url, connectionOptions(options));
}
