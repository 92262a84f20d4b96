import { coerceError } from '../util/errors.js';

/**
 * Which database errors are worth retrying. Decisions are made on codes, never on message text:
 * SQLSTATE for server errors, postgres.js codes for client errors, errno codes for the socket.
 */
const RETRYABLE_SQLSTATE: Readonly<Record<string, string>> = {
  '08000': 'connection_exception',
  '08001': 'sqlclient_unable_to_establish_sqlconnection',
  '08003': 'connection_does_not_exist',
  '08006': 'connection_failure',
  '40001': 'serialization_failure',
  '40P01': 'deadlock_detected',
  '53300': 'too_many_connections',
  '57P01': 'admin_shutdown',
  '57P02': 'crash_shutdown',
  '57P03': 'cannot_connect_now',
};

const RETRYABLE_CLIENT: ReadonlySet<string> = new Set([
  // postgres.js
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  'CONNECT_TIMEOUT',
  // ours: a round trip abandoned after its timeout (the server hangs instead of refusing)
  'query_timeout',
  // sockets
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
]);

/** SQLSTATEs our own code decides on. */
export const SQLSTATE = {
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  checkViolation: '23514',
  notNullViolation: '23502',
  invalidTextRepresentation: '22P02',
  invalidPassword: '28P01',
  invalidAuthorization: '28000',
  invalidCatalogName: '3D000',
  raiseException: 'P0001',
} as const;

export function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

export function isRetryable(err: unknown): boolean {
  const code = errorCode(err);
  if (code === undefined) return false;
  return code in RETRYABLE_SQLSTATE || RETRYABLE_CLIENT.has(code);
}

/** A one-line description of a database error, without credentials. */
export function describeDbError(err: unknown): string {
  const e = coerceError(err) as Error & { code?: string; detail?: string; constraint_name?: string };
  const code = e.code ? ` (${e.code})` : '';
  const detail = e.detail ? `: ${e.detail}` : '';
  return `${e.message}${code}${detail}`;
}
