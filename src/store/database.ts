import { connect } from 'node:net';
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
  /**
   * Named prepared statements (postgres.js's default). Off when the pool goes through a
   * transaction-mode pooler (PgBouncer before 1.21 keeps no prepared statement across transactions).
   */
  prepare?: boolean;
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

const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[?::1\]?)$/i;

/**
 * TLS for a database elsewhere: a URL that does not name `sslmode` (or `ssl`) and whose host is
 * not loopback (nor a Unix socket directory) is opened with `sslmode=require`, so the password and
 * every row do not cross a network in clear by default. A server without TLS is then refused with
 * an error that names `sslmode=disable`, the explicit opt-out for a farm on a trusted LAN.
 */
export function defaultSslMode(url: string): 'require' | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined; // validateDatabaseUrl reports it
  }
  if (parsed.searchParams.has('sslmode') || parsed.searchParams.has('ssl')) return undefined;
  const host = parsed.searchParams.get('host') ?? decodeURIComponent(parsed.hostname);
  if (host === '' || host.startsWith('/') || LOOPBACK_HOST.test(host)) return undefined;
  return 'require';
}

/** postgres.js options shared by every connection we open (`url`: TLS by `defaultSslMode`). */
export function connectionOptions(
  options: { max?: number; application?: string; url?: string; prepare?: boolean } = {},
): postgres.Options<Record<string, postgres.PostgresType>> {
  const ssl = options.url === undefined ? undefined : defaultSslMode(options.url);
  return {
    ...(ssl ? { ssl } : {}),
    ...(options.prepare === false ? { prepare: false } : {}),
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
    if (defaultSslMode(this.url)) await requireTls(this.url);
    this.sql = postgres(this.url, connectionOptions({ ...this.options, url: this.url }));
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

/**
 * Before the default `sslmode=require` is used: does the server offer TLS at all? PostgreSQL answers
 * an SSLRequest with one byte, `S` or `N`. `N` is refused with `database_tls_unavailable`, naming
 * the opt-out; an unreachable server is left to the bounded retry that follows.
 */
async function requireTls(url: string): Promise<void> {
  const parsed = new URL(url);
  const host = parsed.searchParams.get('host') ?? parsed.hostname.replace(/^\[|\]$/g, '');
  const port = Number(parsed.port || 5432);
  const answer = await new Promise<string | undefined>((resolve) => {
    const socket = connect({ host, port });
    const done = (value: string | undefined): void => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(5_000, () => done(undefined));
    socket.once('error', () => done(undefined));
    socket.once('data', (data: Buffer) => done(String.fromCharCode(data[0] ?? 0)));
    // SSLRequest: length 8, code 80877103
    socket.once('connect', () => socket.write(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47])));
  });
  if (answer === 'N')
    throw new ModemfleetError(
      'database_tls_unavailable',
      `PostgreSQL at ${describeUrl(url)} does not offer TLS, which a database on another host needs by default; ` +
        'enable ssl on the server, or add sslmode=disable to DATABASE_URL to connect in clear on a trusted network',
    );
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
  return postgres(url, connectionOptions({ ...options, url }));
}
