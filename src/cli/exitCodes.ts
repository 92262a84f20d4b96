import { ModemfleetError } from '../util/errors.js';

/** Exit codes of the `modemfleet` command; scripts and systemd decide on these. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  config: 3,
  database: 4,
  migration: 5,
  notFound: 6,
  notImplemented: 7,
  /** The modem's host is marked dead (`host_unavailable`): its command was not queued. */
  hostUnavailable: 8,
  /** A backup file that cannot be written or used (backup, restore). */
  backupFile: 9,
} as const;

/** Which error code ends the process with which exit code. */
const BY_ERROR_CODE: Readonly<Record<string, number>> = {
  config_invalid: EXIT.config,
  database_url_invalid: EXIT.config,
  database_unreachable: EXIT.database,
  database_unavailable: EXIT.database,
  database_tls_unavailable: EXIT.database,
  listen_unusable: EXIT.database,
  no_farm_running: EXIT.database,
  pg_password_unreadable: EXIT.database,
  pg_port_taken: EXIT.database,
  pg_start_failed: EXIT.database,
  pg_start_timeout: EXIT.database,
  pg_in_use: EXIT.database,
  pg_dir_unreachable: EXIT.database,
  pg_datadir_foreign: EXIT.database,
  pg_binaries_missing: EXIT.database,
  no_cluster: EXIT.database,
  farm_running: EXIT.database,
  migration_refused: EXIT.migration,
  backup_schema_newer: EXIT.migration,
  backup_schema_mismatch: EXIT.migration,
  backup_unreadable: EXIT.backupFile,
  backup_corrupt: EXIT.backupFile,
  backup_exists: EXIT.backupFile,
  backup_unwritable: EXIT.backupFile,
  unknown_modem: EXIT.notFound,
  unknown_token: EXIT.notFound,
  invalid_token: EXIT.usage,
  invalid_imei: EXIT.usage,
  invalid_command: EXIT.usage,
  invalid_schedule: EXIT.usage,
  invalid_silence: EXIT.usage,
  unknown_silence: EXIT.notFound,
  invalid_quota: EXIT.usage,
  invalid_expiry: EXIT.usage,
  no_quota: EXIT.notFound,
  no_expiry: EXIT.notFound,
  host_unavailable: EXIT.hostUnavailable,
  usage: EXIT.usage,
  not_implemented: EXIT.notImplemented,
};

export function exitCodeFor(err: unknown): number {
  if (err instanceof ModemfleetError) return BY_ERROR_CODE[err.code] ?? EXIT.failure;
  return EXIT.failure;
}

export class UsageError extends ModemfleetError {
  constructor(message: string) {
    super('usage', message);
    this.name = 'UsageError';
  }
}
