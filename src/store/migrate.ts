import { createHash } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import type { Sql, TransactionSql } from 'postgres';
import { silentLogger, type Logger } from '../log.js';
import { ModemfleetError } from '../util/errors.js';

export interface Migration {
  version: number;
  name: string;
  file: string;
  sql: string;
  checksum: string;
}

/** The sql/ folder shipped with this package (works from src/ under tsx and from dist/). */
export const defaultMigrationsDir = (): string =>
  fileURLToPath(new URL('../../sql/', import.meta.url)).replace(/dist\/sql\/$/, 'sql/');

const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;
/** Arbitrary but fixed: serialises migrators across processes and hosts. */
export const MIGRATION_LOCK_KEY = 0x6d66_6d67; // 'mfmg'

export class MigrationError extends ModemfleetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('migration_refused', message, options);
    this.name = 'MigrationError';
  }
}

export function checksum(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Read sql/NNNN_name.sql in order; refuse stray files, duplicates and gaps in the numbering. */
export async function loadMigrations(dir = defaultMigrationsDir()): Promise<Migration[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.sql')).sort();
  const migrations: Migration[] = [];
  for (const file of files) {
    const match = FILE_PATTERN.exec(file);
    if (!match)
      throw new MigrationError(`${join(dir, file)}: migration files are named NNNN_name.sql (lowercase)`);
    const text = await readFile(join(dir, file), 'utf8');
    migrations.push({
      version: Number(match[1]),
      name: match[2] ?? '',
      file,
      sql: text,
      checksum: checksum(text),
    });
  }
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) {
      const expected = String(i + 1).padStart(4, '0');
      throw new MigrationError(
        m.version === i
          ? `${m.file}: duplicate migration number ${expected.slice(0, 4)}`
          : `${m.file}: gap in migration numbering, expected ${expected}_*.sql before it`,
      );
    }
  });
  return migrations;
}

export interface AppliedRow {
  version: number;
  name: string;
  checksum: string;
}

/** Applied migrations must be a prefix of the files, with the same checksums. */
export function verifyApplied(applied: AppliedRow[], migrations: Migration[]): void {
  for (const row of applied) {
    const m = migrations.find((x) => x.version === row.version);
    if (!m) {
      throw new MigrationError(
        `the database has migration ${String(row.version).padStart(4, '0')}_${row.name}.sql, which this version of modemfleet does not ship (a newer version migrated it?)`,
      );
    }
    if (m.checksum !== row.checksum) {
      throw new MigrationError(
        `${m.file}: changed after it was applied (checksum differs); released migrations are never edited, add a new file`,
      );
    }
  }
  applied.forEach((row, i) => {
    if (row.version !== i + 1)
      throw new MigrationError(`schema_migrations has a gap before version ${row.version}`);
  });
}

const createMigrationsTable = (tx: TransactionSql) => tx`create table if not exists schema_migrations (
  version integer primary key,
  name text not null,
  checksum text not null,
  applied_at timestamptz not null default now()
)`;

async function applyMigration(tx: TransactionSql, m: Migration): Promise<void> {
  try {
    await tx.unsafe(m.sql);
  } catch (err) {
    throw new MigrationError(`${m.file}: ${(err as Error).message}`, { cause: err });
  }
  await tx`insert into schema_migrations (version, name, checksum) values (${m.version}, ${m.name}, ${m.checksum})`;
}

/**
 * Inside the caller's transaction, which holds `MIGRATION_LOCK_KEY` (restore): the applied
 * migrations are verified, then the pending ones up to `upTo` are applied. Returns their files.
 */
export async function migrateWithin(
  tx: TransactionSql,
  migrations: Migration[],
  upTo: number,
): Promise<string[]> {
  await createMigrationsTable(tx);
  const rows = await tx<AppliedRow[]>`select version, name, checksum from schema_migrations order by version`;
  verifyApplied(rows, migrations);
  const files: string[] = [];
  for (const m of migrations.slice(rows.length, upTo)) {
    await applyMigration(tx, m);
    files.push(m.file);
  }
  return files;
}

export interface MigrateResult {
  applied: string[];
  current: number;
}

/**
 * Apply pending migrations in order, each in its own transaction under a transaction-level advisory
 * lock, so concurrent migrators (two processes, two hosts) take turns and each file runs once.
 */
export async function migrate(
  sql: Sql,
  options: { dir?: string; log?: Logger } = {},
): Promise<MigrateResult> {
  const log = (options.log ?? silentLogger).child({ component: 'migrate' });
  const migrations = await loadMigrations(options.dir);
  const applied: string[] = [];
  for (;;) {
    const next = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`;
      await createMigrationsTable(tx);
      const rows = await tx<
        AppliedRow[]
      >`select version, name, checksum from schema_migrations order by version`;
      verifyApplied(rows, migrations);
      const pending = migrations[rows.length];
      if (!pending) return undefined;
      await applyMigration(tx, pending);
      return pending;
    });
    if (!next) break;
    log.info({ migration: next.file }, 'migration applied');
    applied.push(next.file);
  }
  return { applied, current: migrations.length };
}

/** Refuse to run against a database whose applied migrations differ from ours (without migrating). */
export async function verifyMigrations(sql: Sql, dir?: string): Promise<{ pending: number }> {
  const migrations = await loadMigrations(dir);
  const exists = await sql`select to_regclass('schema_migrations') is not null as ok`;
  const rows = exists[0]?.['ok']
    ? await sql<AppliedRow[]>`select version, name, checksum from schema_migrations order by version`
    : [];
  verifyApplied(rows, migrations);
  return { pending: migrations.length - rows.length };
}
