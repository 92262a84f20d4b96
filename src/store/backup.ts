import { once } from 'node:events';
import { finished } from 'node:stream/promises';
import type { Writable } from 'node:stream';
import type { Sql, TransactionSql } from 'postgres';
import { silentLogger, type Logger } from '../log.js';
import { ModemfleetError } from '../util/errors.js';
import {
  BACKUP_FORMAT,
  BACKUP_LIMITS,
  BACKUP_VERSION,
  BackupError,
  checkBackupSchema,
  copyOrder,
  migrationFile,
  parseTrailer,
  quoteIdent,
  type BackupHeader,
  type BackupReader,
  type BackupTable,
} from './backupFormat.js';
import {
  MIGRATION_LOCK_KEY,
  migrateWithin,
  verifyApplied,
  type AppliedRow,
  type Migration,
} from './migrate.js';

/**
 * A logical backup and restore of the whole database by modemfleet itself (no pg_dump of a
 * matching version needed): every table of the schema, as COPY text, in one consistent snapshot.
 * The file around it (gzip, atomic write, mode 0600) is src/cli/backup.ts's business; the format
 * is src/store/backupFormat.ts.
 */
export interface BackupSummary {
  schemaVersion: number;
  migration: string;
  rows: Record<string, number>;
}

/** A running farm's connection: the LISTEN connection every daemon and demo keeps open. */
const FARM_APPLICATION = 'modemfleet-listen';
/** A host whose heartbeat is older than this is dead (`policy.hostDeadAfterMs`'s default). */
const HOST_DEAD_AFTER_MS = 60_000;
/** How long a restore waits for a lock held by someone else before giving up (changing nothing). */
const RESTORE_LOCK_TIMEOUT = '10s';

type Tx = TransactionSql;

interface Catalog {
  /** Ordinary tables with their copied columns (not generated ones), parents first. */
  tables: BackupTable[];
  sequences: { name: string; lastValue: string | null }[];
  /** Columns that take their values from a sequence (serial, identity). */
  owned: { sequence: string; table: string; column: string }[];
}

const SCHEMA = `(select oid from pg_namespace where nspname = current_schema())`;
const NOT_FROM_EXTENSION = (oid: string): string =>
  `not exists (select 1 from pg_depend e where e.objid = ${oid} and e.deptype = 'e')`;

async function readCatalog(tx: Tx): Promise<Catalog> {
  const partitioned = await tx.unsafe<{ name: string }[]>(
    `select relname as name from pg_class where relnamespace = ${SCHEMA} and relkind = 'p'`,
  );
  if (partitioned.length > 0)
    throw new ModemfleetError(
      'backup_unsupported',
      `partitioned tables are not backed up yet (${partitioned.map((p) => p.name).join(', ')})`,
    );
  const columns = await tx.unsafe<{ table: string; column: string }[]>(
    `select c.relname as table, a.attname as column
     from pg_class c join pg_attribute a on a.attrelid = c.oid
     where c.relnamespace = ${SCHEMA} and c.relkind = 'r' and ${NOT_FROM_EXTENSION('c.oid')}
       and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''
     order by c.relname, a.attnum`,
  );
  const byTable = new Map<string, string[]>();
  for (const { table, column } of columns) byTable.set(table, [...(byTable.get(table) ?? []), column]);
  const references = await tx.unsafe<{ from: string; to: string }[]>(
    `select c.relname as from, p.relname as to
     from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_class p on p.oid = k.confrelid
     where k.contype = 'f' and c.relnamespace = ${SCHEMA}`,
  );
  const order = copyOrder(
    [...byTable.keys()],
    references.map((r) => [r.from, r.to] as const),
  );
  const sequences = await tx<{ name: string; lastValue: string | null }[]>`
    select sequencename as name, last_value::text as "lastValue"
    from pg_sequences where schemaname = current_schema() order by sequencename`;
  const owned = await tx.unsafe<{ sequence: string; table: string; column: string }[]>(
    `select s.relname as sequence, t.relname as table, a.attname as column
     from pg_depend d
       join pg_class s on s.oid = d.objid and s.relkind = 'S'
       join pg_class t on t.oid = d.refobjid
       join pg_attribute a on a.attrelid = t.oid and a.attnum = d.refobjsubid
     where d.classid = 'pg_class'::regclass and d.refclassid = 'pg_class'::regclass
       and d.deptype in ('a', 'i') and s.relnamespace = ${SCHEMA}`,
  );
  return {
    tables: order.map((name) => ({ name, columns: byTable.get(name) ?? [] })),
    sequences: [...sequences],
    owned: [...owned],
  };
}

async function appliedMigrations(tx: Tx): Promise<AppliedRow[]> {
  const [exists] = await tx<{ ok: boolean }[]>`select to_regclass('schema_migrations') is not null as ok`;
  return exists?.ok
    ? [...(await tx<AppliedRow[]>`select version, name, checksum from schema_migrations order by version`)]
    : [];
}

const copyColumns = (t: BackupTable): string => t.columns.map(quoteIdent).join(', ');

/**
 * Writes the whole database as a backup's text (header, every table's rows, row counts) into
 * `out` (the caller's gzip stream; not ended here), from one REPEATABLE READ READ ONLY transaction:
 * a consistent snapshot of a running farm, which goes on working meanwhile.
 */
export async function writeBackup(sql: Sql, out: Writable, now: Date = new Date()): Promise<BackupSummary> {
  const put = writer(out);
  return sql.begin('isolation level repeatable read read only', async (tx) => {
    const migrations = await appliedMigrations(tx);
    const catalog = await readCatalog(tx);
    const [server] = await tx<{ v: string }[]>`select current_setting('server_version') as v`;
    const header: BackupHeader = {
      format: BACKUP_FORMAT,
      version: BACKUP_VERSION,
      createdAt: now.toISOString(),
      schemaVersion: migrations.length,
      migrations: migrations.map(({ version, name, checksum }) => ({ version, name, checksum })),
      server: server?.v ?? '',
      tables: catalog.tables,
      sequences: catalog.sequences,
    };
    await put(`${JSON.stringify(header)}\n`);
    const rows: Record<string, number> = {};
    for (const table of catalog.tables) {
      const query = tx.unsafe(`copy ${quoteIdent(table.name)} (${copyColumns(table)}) to stdout`);
      const copy = (await query.readable()) as AsyncIterable<Buffer>;
      let lines = 0;
      let failed: { err: unknown } | undefined;
      try {
        for await (const chunk of copy) {
          // after a failed write the COPY is cancelled and read to its end, never left half
          // read: its connection would hang (the socket paused) and the transaction never end
          if (failed) continue;
          try {
            for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) lines++;
            await put(chunk);
          } catch (err) {
            failed = { err };
            query.cancel();
          }
        }
      } catch (err) {
        throw failed ? failed.err : err;
      }
      if (failed) throw failed.err;
      await put('\\.\n');
      rows[table.name] = lines;
    }
    await put(`${JSON.stringify({ end: BACKUP_FORMAT, rows })}\n`);
    return { schemaVersion: header.schemaVersion, migration: migrationFile(migrations.at(-1)), rows };
  });
}

/** A write that waits for `drain`, and fails at once when the stream failed. */
function writer(out: Writable): (chunk: Buffer | string) => Promise<void> {
  return async (chunk) => {
    if (out.errored) throw out.errored;
    if (out.destroyed) throw new Error('the output stream was closed');
    if (!out.write(chunk)) await once(out, 'drain');
  };
}

/** The farms using this database now: hosts with a recent heartbeat, live LISTEN connections. */
async function runningFarms(tx: Tx, deadAfterMs: number): Promise<string[]> {
  const [hostsTable] = await tx<{ ok: boolean }[]>`select to_regclass('hosts') is not null as ok`;
  const hosts = hostsTable?.ok
    ? await tx<{ id: string; age: number }[]>`
        select id, greatest(0, extract(epoch from now() - heartbeat_at))::int as age from hosts
        where stopped_at is null and heartbeat_at > now() - make_interval(secs => ${deadAfterMs / 1000})
        order by id`
    : [];
  const sessions = await tx<{ n: number }[]>`
    select count(*)::int as n from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid()
      and application_name = ${FARM_APPLICATION}`;
  const found = hosts.map((h) => `host ${h.id}, heartbeat ${h.age} s ago`);
  const n = sessions[0]?.n ?? 0;
  if (n > 0) found.push(`${n} LISTEN connection${n === 1 ? '' : 's'} of a modemfleet`);
  return found;
}

/**
 * Drops everything of ours in the schema (tables, views, sequences, functions, types; not an
 * extension's objects), so the backup's migrations can be applied from the start: a database
 * whose schema is newer than the backup's is rebuilt at the backup's version.
 */
async function clearSchema(tx: Tx): Promise<void> {
  const relations = await tx.unsafe<{ name: string; kind: string }[]>(
    `select c.oid::regclass::text as name, c.relkind as kind from pg_class c
     where c.relnamespace = ${SCHEMA} and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
       and ${NOT_FROM_EXTENSION('c.oid')}`,
  );
  const KIND: Record<string, string> = {
    r: 'table',
    p: 'table',
    f: 'foreign table',
    v: 'view',
    m: 'materialized view',
    S: 'sequence',
  };
  for (const r of relations) await tx.unsafe(`drop ${KIND[r.kind] ?? 'table'} if exists ${r.name} cascade`);
  const routines = await tx.unsafe<{ name: string; kind: string }[]>(
    `select p.oid::regprocedure::text as name, p.prokind as kind from pg_proc p
     where p.pronamespace = ${SCHEMA} and ${NOT_FROM_EXTENSION('p.oid')}`,
  );
  for (const r of routines)
    await tx.unsafe(
      `drop ${r.kind === 'a' ? 'aggregate' : r.kind === 'p' ? 'procedure' : 'function'} if exists ${r.name} cascade`,
    );
  const types = await tx.unsafe<{ name: string; kind: string }[]>(
    `select t.oid::regtype::text as name, t.typtype as kind from pg_type t
     where t.typnamespace = ${SCHEMA} and t.typtype in ('c', 'd', 'e', 'r', 'm')
       and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
       and ${NOT_FROM_EXTENSION('t.oid')}`,
  );
  for (const t of types)
    await tx.unsafe(`drop ${t.kind === 'd' ? 'domain' : 'type'} if exists ${t.name} cascade`);
}

/** The database's tables and sequences must be the backup's (same schema version, same code). */
function checkTables(header: BackupHeader, catalog: Catalog): void {
  const problem = (what: string): BackupError =>
    new BackupError(
      'backup_schema_mismatch',
      `the database at ${migrationFile(header.migrations.at(-1))} does not have the backup's tables: ${what}`,
    );
  const ours = new Map(catalog.tables.map((t) => [t.name, t.columns]));
  for (const t of header.tables) {
    const columns = ours.get(t.name);
    if (!columns) throw problem(`no table ${t.name}`);
    const missing = t.columns.filter((c) => !columns.includes(c));
    const extra = columns.filter((c) => !t.columns.includes(c));
    if (missing.length > 0 || extra.length > 0)
      throw problem(
        `${t.name} ${missing.length > 0 ? `has no column ${missing.join(', ')}` : `has column ${extra.join(', ')} the backup lacks`}`,
      );
    ours.delete(t.name);
  }
  if (ours.size > 0) throw problem(`table ${[...ours.keys()].join(', ')} is not in the backup`);
  const sequences = new Set(header.sequences.map((s) => s.name));
  for (const s of catalog.sequences)
    if (!sequences.has(s.name)) throw problem(`sequence ${s.name} is not in the backup`);
  for (const name of sequences)
    if (!catalog.sequences.some((s) => s.name === name)) throw problem(`no sequence ${name}`);
}

/** One table's rows from the file into COPY; a bad row fails the COPY (and the transaction). */
async function copyIn(tx: Tx, table: BackupTable, reader: BackupReader): Promise<number> {
  const into = await tx
    .unsafe(`copy ${quoteIdent(table.name)} (${copyColumns(table)}) from stdin`)
    .writable();
  const done = finished(into);
  done.catch(() => undefined); // awaited below; a failure before then must not go unhandled
  const put = writer(into);
  const refused = (err: unknown): unknown =>
    REFUSED_ROW.test(String((err as { code?: unknown }).code))
      ? new BackupError(
          'backup_corrupt',
          `the database refuses the rows of ${table.name}: ${(err as Error).message}`,
          { cause: err },
        )
      : err;
  let count: number;
  try {
    count = await reader.rows(table.name, put);
  } catch (err) {
    if (into.errored) throw refused(into.errored);
    into.destroy(err as Error); // CopyFail: the server ends the COPY, the transaction rolls back
    throw err;
  }
  into.end();
  try {
    await done;
  } catch (err) {
    throw refused(err);
  }
  return count;
}

/** SQLSTATE classes of a row COPY refuses: data exception (22), integrity constraint (23). */
const REFUSED_ROW = /^2[23][0-9A-Z]{3}$/;

export interface RestoreOptions {
  /** The migrations this modemfleet ships (loadMigrations()). */
  migrations: Migration[];
  /** A host heartbeating more recently than this is running (`policy.hostDeadAfterMs`). */
  hostDeadAfterMs?: number;
  log?: Logger;
}

export interface RestoreSummary extends BackupSummary {
  /** Migrations applied after the data, up to this modemfleet's schema. */
  migrated: string[];
}

/**
 * Replaces the database's contents with the backup's, in one transaction: any failure (a bad
 * file, a row the database refuses, a lock it cannot get) leaves it exactly as it was.
 *
 * Refused while a farm uses the database (`farm_running`). The schema is brought to the backup's
 * version first: migrated forward when it is older (or empty), rebuilt from nothing when it is
 * newer; then every table is truncated and copied in with its triggers off (no NOTIFY, no alert
 * deliveries queued, rows as they were), the sequences restarted where the backup left them (never
 * below a column's largest value), and the later migrations of this modemfleet applied.
 */
export async function restoreBackup(
  sql: Sql,
  header: BackupHeader,
  reader: BackupReader,
  options: RestoreOptions,
): Promise<RestoreSummary> {
  const log = (options.log ?? silentLogger).child({ component: 'restore' });
  checkBackupSchema(header.migrations, options.migrations);
  const target = header.schemaVersion;
  return sql.begin(async (tx) => {
    await tx.unsafe(`set local lock_timeout = '${RESTORE_LOCK_TIMEOUT}'`);
    await tx`select pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`; // no migrator meanwhile
    const deadAfterMs = options.hostDeadAfterMs ?? HOST_DEAD_AFTER_MS;
    const farms = await runningFarms(tx, deadAfterMs);
    if (farms.length > 0)
      throw new ModemfleetError(
        'farm_running',
        `a farm is using this database (${farms.join('; ')}): stop it first (systemctl stop modemfleet); a host that was killed counts as running until ${Math.round(deadAfterMs / 1000)} s after its last heartbeat`,
      );
    const applied = await appliedMigrations(tx);
    verifyApplied(applied, options.migrations); // a database this modemfleet does not know is left alone
    if (applied.length > target) {
      log.info(
        { database: migrationFile(applied.at(-1)), backup: migrationFile(header.migrations.at(-1)) },
        'the database is newer than the backup: rebuilding its schema at the backup version',
      );
      await clearSchema(tx);
    }
    await migrateWithin(tx, options.migrations, target);
    const catalog = await readCatalog(tx);
    checkTables(header, catalog);

    const tables = header.tables.map((t) => quoteIdent(t.name));
    for (const t of tables) await tx.unsafe(`alter table ${t} disable trigger user`);
    if (tables.length > 0) await tx.unsafe(`truncate table ${tables.join(', ')}`);
    const rows: Record<string, number> = {};
    for (const table of header.tables) rows[table.name] = await copyIn(tx, table, reader);
    const last = await reader.line(BACKUP_LIMITS.headerBytes, 'the row counts');
    if (last === undefined) throw new BackupError('backup_corrupt', 'the file ends before its row counts');
    const trailer = parseTrailer(last.toString('utf8'), header);
    for (const t of header.tables)
      if (trailer.rows[t.name] !== rows[t.name])
        throw new BackupError(
          'backup_corrupt',
          `${t.name} has ${rows[t.name]} rows, the backup says ${trailer.rows[t.name]}`,
        );
    if (!(await reader.atEnd()))
      throw new BackupError('backup_corrupt', 'there is more after its row counts');
    const restored = await appliedMigrations(tx);
    if (JSON.stringify(restored) !== JSON.stringify(header.migrations))
      throw new BackupError('backup_corrupt', "its schema_migrations rows are not its header's migrations");

    await restartSequences(tx, header, catalog);
    for (const t of tables) await tx.unsafe(`alter table ${t} enable trigger user`);
    const migrated = await migrateWithin(tx, options.migrations, options.migrations.length);
    for (const file of migrated) log.info({ migration: file }, 'migration applied');
    return {
      schemaVersion: target,
      migration: migrationFile(header.migrations.at(-1)),
      rows,
      migrated,
    };
  });
}

/**
 * Each sequence where the backup left it, and never below the largest value of a column it feeds.
 * RESTART first: unlike a bare setval, it is undone with the transaction (a new relfilenode), and
 * so is the setval after it.
 */
async function restartSequences(tx: Tx, header: BackupHeader, catalog: Catalog): Promise<void> {
  for (const s of header.sequences) {
    const name = quoteIdent(s.name);
    await tx.unsafe(`alter sequence ${name} restart`);
    let value = s.lastValue === null ? null : BigInt(s.lastValue);
    for (const o of catalog.owned.filter((x) => x.sequence === s.name)) {
      const [row] = await tx.unsafe<{ max: string | null }[]>(
        `select max(${quoteIdent(o.column)})::text as max from ${quoteIdent(o.table)}`,
      );
      if (row?.max != null && (value === null || BigInt(row.max) > value)) value = BigInt(row.max);
    }
    if (value !== null) await tx`select setval(${name}::regclass, ${String(value)}::bigint, true)`;
  }
}
