import { ModemfleetError } from '../util/errors.js';
import type { Migration } from './migrate.js';

/**
 * The backup file (pure: no I/O here). gzip of text lines:
 *
 *   {"format":"modemfleet-backup","version":1,"createdAt",...,"tables":[...],"sequences":[...]}
 *   <each table in `tables` order (parents before the tables that reference them): its rows as
 *    COPY text, one line per row, then a line `\.`>
 *   {"end":"modemfleet-backup","rows":{"<table>":N,...}}
 *
 * COPY's text format escapes backslashes, newlines and carriage returns, so a row is one line and
 * no row is ever the line `\.`. gzip's CRC and length catch a damaged or truncated file; the row
 * counts of the last line catch one cut between gzip members or edited by hand.
 */
export const BACKUP_FORMAT = 'modemfleet-backup';
export const BACKUP_VERSION = 1;

/** Bounds on what a backup's header may hold (a hostile file must not exhaust memory). */
export const BACKUP_LIMITS = {
  headerBytes: 1 << 20,
  tables: 500,
  columns: 1_600,
  sequences: 500,
  migrations: 9_999,
  /** One row as COPY text (our widest rows are a few KiB; PostgreSQL's own field limit is 1 GB). */
  rowBytes: 64 << 20,
} as const;

export interface BackupMigration {
  version: number;
  name: string;
  checksum: string;
}

export interface BackupTable {
  name: string;
  columns: string[];
}

export interface BackupSequence {
  name: string;
  /** As text (int8); null when the sequence was never used. */
  lastValue: string | null;
}

export interface BackupHeader {
  format: typeof BACKUP_FORMAT;
  version: typeof BACKUP_VERSION;
  createdAt: string;
  /** The last migration applied to the database the backup was taken from (0: none). */
  schemaVersion: number;
  migrations: BackupMigration[];
  /** `server_version` of that database (for the operator; a restore works across versions). */
  server: string;
  tables: BackupTable[];
  sequences: BackupSequence[];
}

export interface BackupTrailer {
  end: typeof BACKUP_FORMAT;
  rows: Record<string, number>;
}

/**
 * A backup that cannot be made or used: `backup_unreadable` (missing, not a file, not a modemfleet
 * backup), `backup_corrupt` (damaged, truncated, rows the database refuses), `backup_exists`,
 * `backup_unwritable`, `backup_schema_newer` (made by a newer modemfleet), `backup_schema_mismatch`.
 */
export class BackupError extends ModemfleetError {
  declare readonly code: BackupErrorCode;
  constructor(code: BackupErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'BackupError';
  }

  /** The same error, its message prefixed with the file it is about. */
  about(file: string): BackupError {
    return new BackupError(this.code, `${file}: ${this.message}`, { cause: this.cause });
  }
}

export type BackupErrorCode =
  | 'backup_unreadable'
  | 'backup_corrupt'
  | 'backup_exists'
  | 'backup_unwritable'
  | 'backup_schema_newer'
  | 'backup_schema_mismatch';

/** `0012_webhooks.sql`, or `no migration` for version 0. */
export function migrationFile(m: Pick<BackupMigration, 'version' | 'name'> | undefined): string {
  return m ? `${String(m.version).padStart(4, '0')}_${m.name}.sql` : 'no migration';
}

/** A double-quoted SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_$]{0,62}$/;
const CHECKSUM = /^[0-9a-f]{64}$/;
const INT8 = /^-?\d{1,19}$/;

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** The header line, checked field by field; anything else is `backup_unreadable`. */
export function parseHeader(line: string): BackupHeader {
  const notOurs = (why: string): BackupError =>
    new BackupError('backup_unreadable', `not a modemfleet backup (${why})`);
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw notOurs('its first line is not JSON');
  }
  if (!isRecord(value) || value['format'] !== BACKUP_FORMAT) throw notOurs('no format marker');
  if (value['version'] !== BACKUP_VERSION)
    throw new BackupError(
      'backup_unreadable',
      `backup format version ${JSON.stringify(value['version'])?.slice(0, 20)} is not one this modemfleet reads (${BACKUP_VERSION}): restore it with the modemfleet that made it`,
    );
  const bad = (field: string): BackupError => notOurs(`bad ${field}`);
  const { createdAt, schemaVersion, migrations, server, tables, sequences } = value;
  if (typeof createdAt !== 'string' || Number.isNaN(Date.parse(createdAt))) throw bad('createdAt');
  if (typeof server !== 'string' || server.length > 200) throw bad('server');
  if (!Number.isInteger(schemaVersion) || (schemaVersion as number) < 0) throw bad('schemaVersion');
  if (!Array.isArray(migrations) || migrations.length > BACKUP_LIMITS.migrations) throw bad('migrations');
  const ms = migrations.map((m: unknown, i): BackupMigration => {
    if (
      !isRecord(m) ||
      m['version'] !== i + 1 ||
      typeof m['name'] !== 'string' ||
      !/^[a-z0-9_]{1,100}$/.test(m['name']) ||
      typeof m['checksum'] !== 'string' ||
      !CHECKSUM.test(m['checksum'])
    )
      throw bad(`migration ${i + 1}`);
    return { version: i + 1, name: m['name'], checksum: m['checksum'] };
  });
  if (ms.length !== schemaVersion) throw bad('schemaVersion (not the number of migrations)');
  if (!Array.isArray(tables) || tables.length > BACKUP_LIMITS.tables) throw bad('tables');
  const seen = new Set<string>();
  const ts = tables.map((t: unknown): BackupTable => {
    const name = isRecord(t) ? t['name'] : undefined;
    const columns = isRecord(t) ? t['columns'] : undefined;
    if (typeof name !== 'string' || !NAME.test(name) || seen.has(name)) throw bad('table name');
    seen.add(name);
    if (
      !Array.isArray(columns) ||
      columns.length === 0 ||
      columns.length > BACKUP_LIMITS.columns ||
      !columns.every((c) => typeof c === 'string' && NAME.test(c)) ||
      new Set(columns).size !== columns.length
    )
      throw bad(`columns of ${name}`);
    return { name, columns: columns as string[] };
  });
  if (!Array.isArray(sequences) || sequences.length > BACKUP_LIMITS.sequences) throw bad('sequences');
  const ss = sequences.map((s: unknown): BackupSequence => {
    const name = isRecord(s) ? s['name'] : undefined;
    const lastValue = isRecord(s) ? s['lastValue'] : undefined;
    if (typeof name !== 'string' || !NAME.test(name)) throw bad('sequence name');
    if (lastValue !== null && (typeof lastValue !== 'string' || !INT8.test(lastValue)))
      throw bad(`value of sequence ${name}`);
    return { name, lastValue };
  });
  return {
    format: BACKUP_FORMAT,
    version: BACKUP_VERSION,
    createdAt,
    schemaVersion,
    migrations: ms,
    server,
    tables: ts,
    sequences: ss,
  };
}

/** The last line: the row count of every table of the header, nothing else. */
export function parseTrailer(line: string, header: BackupHeader): BackupTrailer {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    value = undefined;
  }
  const rows = isRecord(value) && value['end'] === BACKUP_FORMAT ? value['rows'] : undefined;
  if (
    !isRecord(rows) ||
    Object.keys(rows).length !== header.tables.length ||
    !header.tables.every((t) => Number.isSafeInteger(rows[t.name]) && (rows[t.name] as number) >= 0)
  )
    throw new BackupError('backup_corrupt', 'its last line is not the row counts of its tables');
  return { end: BACKUP_FORMAT, rows: rows as Record<string, number> };
}

/**
 * Whether this modemfleet can restore a backup made at `backup` migrations: they must be the first
 * of the ones it ships, unchanged. A newer backup needs a newer modemfleet.
 */
export function checkBackupSchema(backup: readonly BackupMigration[], shipped: readonly Migration[]): void {
  const latest = shipped.at(-1);
  if (backup.length > shipped.length)
    throw new BackupError(
      'backup_schema_newer',
      `the backup's schema is ${migrationFile(backup.at(-1))}, newer than this modemfleet's (${migrationFile(latest)}): upgrade modemfleet first, then restore`,
    );
  for (const m of backup) {
    const ours = shipped[m.version - 1];
    if (!ours || ours.name !== m.name || ours.checksum !== m.checksum)
      throw new BackupError(
        'backup_schema_mismatch',
        `the backup's migration ${migrationFile(m)} is not this modemfleet's ${migrationFile(ours)} (${ours?.name === m.name ? 'its checksum differs' : 'another name'}): restore it with the modemfleet version that made it`,
      );
  }
}

/**
 * Tables in an order that copies each one after the tables it references (foreign keys), by name
 * otherwise; a table that references itself is fine (checked at the end of its COPY).
 */
export function copyOrder(
  tables: readonly string[],
  references: readonly (readonly [string, string])[],
): string[] {
  const parents = new Map(tables.map((t) => [t, new Set<string>()]));
  for (const [from, to] of references) if (from !== to && parents.has(to)) parents.get(from)?.add(to);
  const order: string[] = [];
  const done = new Set<string>();
  const left = [...tables].sort();
  while (left.length > 0) {
    const next = left.findIndex((t) => [...(parents.get(t) ?? [])].every((p) => done.has(p)));
    if (next < 0) throw new Error(`foreign keys form a cycle among ${left.join(', ')}`);
    const [table] = left.splice(next, 1);
    if (table === undefined) break;
    order.push(table);
    done.add(table);
  }
  return order;
}

const NEWLINE = 0x0a;
const BACKSLASH = 0x5c;
const DOT = 0x2e;

/** The line `\.` at `start` of `buf`, ending before `end`. */
const isEndOfData = (buf: Buffer, start: number, end: number): boolean =>
  end - start === 2 && buf[start] === BACKSLASH && buf[start + 1] === DOT;

/**
 * Reads a backup's decompressed bytes: lines for the header and the trailer, and each table's rows
 * in large slices for COPY (no copy per row). Anything malformed is `backup_corrupt`; errors of the
 * source (zlib: a damaged or truncated file) pass through.
 */
export class BackupReader {
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  private readonly source: AsyncIterator<Buffer>;

  constructor(source: AsyncIterable<Buffer>) {
    this.source = source[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.source.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    this.pending = this.pending.length > 0 ? Buffer.concat([this.pending, next.value]) : next.value;
    return true;
  }

  /** The next line without its newline; undefined at the end of the input. */
  async line(maxBytes: number, what: string): Promise<Buffer | undefined> {
    let from = 0;
    for (;;) {
      const nl = this.pending.indexOf(NEWLINE, from);
      if (nl >= 0) {
        if (nl > maxBytes)
          throw new BackupError('backup_corrupt', `${what} is longer than ${maxBytes} bytes`);
        const line = this.pending.subarray(0, nl);
        this.pending = this.pending.subarray(nl + 1);
        return line;
      }
      if (this.pending.length > maxBytes)
        throw new BackupError('backup_corrupt', `${what} is longer than ${maxBytes} bytes`);
      from = this.pending.length;
      if (!(await this.fill())) {
        if (this.pending.length > 0)
          throw new BackupError('backup_corrupt', `the file ends in the middle of ${what}`);
        return undefined;
      }
    }
  }

  /** Nothing is left. */
  async atEnd(): Promise<boolean> {
    while (this.pending.length === 0) if (!(await this.fill())) return true;
    return false;
  }

  /**
   * One table's rows, up to its `\.` line, handed to `sink` as slices of whole lines (at most
   * `maxRowBytes` per row). Returns how many rows there were.
   */
  async rows(
    table: string,
    sink: (chunk: Buffer) => Promise<void>,
    maxRowBytes: number = BACKUP_LIMITS.rowBytes,
  ): Promise<number> {
    let count = 0;
    for (;;) {
      let pos = 0;
      let finished = false;
      for (;;) {
        const nl = this.pending.indexOf(NEWLINE, pos);
        if (nl < 0) break;
        if (isEndOfData(this.pending, pos, nl)) {
          finished = true;
          break;
        }
        count++;
        pos = nl + 1;
      }
      if (pos > 0) {
        const chunk = this.pending.subarray(0, pos);
        this.pending = this.pending.subarray(pos);
        await sink(chunk);
      }
      if (finished) {
        this.pending = this.pending.subarray(3); // `\.` and its newline
        return count;
      }
      if (this.pending.length > maxRowBytes)
        throw new BackupError('backup_corrupt', `a row of ${table} is longer than ${maxRowBytes} bytes`);
      if (!(await this.fill()))
        throw new BackupError('backup_corrupt', `the file ends in the rows of ${table} (after ${count})`);
    }
  }
}
