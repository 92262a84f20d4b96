import { randomBytes } from 'node:crypto';
import { link, lstat, open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import type { Logger } from '../log.js';
import { writeBackup, restoreBackup, type BackupSummary, type RestoreSummary } from '../store/backup.js';
import {
  BACKUP_LIMITS,
  BackupError,
  BackupReader,
  parseHeader,
  type BackupHeader,
} from '../store/backupFormat.js';
import { loadMigrations } from '../store/migrate.js';
import { withSystem, type SystemConfig, type SystemOptions } from '../system.js';

export const BACKUP_USAGE = 'backup FILE [--force] [--config FILE]';
export const RESTORE_USAGE = 'restore FILE [--config FILE]';

/**
 * `modemfleet backup FILE` and `modemfleet restore FILE`: the file around src/store/backup.ts.
 * The database is DATABASE_URL's, or the embedded server of this state dir: the running farm's
 * (backup), or, with the farm stopped, its cluster started for the command alone (restore always;
 * backup too), which changes nothing the service owns (src/process/embeddedCluster.ts).
 */
const systemOptions = (embedded: 'either' | 'stopped', log: Logger): SystemOptions => ({
  application: 'modemfleet-cli',
  max: 2,
  embedded,
  // backup: the schema as it is; restore: migrates inside its own transaction
  migrations: 'none',
  log,
});

export interface BackupResult extends BackupSummary {
  file: string;
  bytes: number;
}

/**
 * Writes the whole database to `file`: gzip, mode 0600 (it holds proxy passwords, webhook
 * secrets and token hashes), written to a temporary file beside it and moved into place only when
 * complete, so `file` is a whole backup or absent. An existing file is kept unless `force`.
 */
export async function backupCommand(
  config: SystemConfig,
  file: string,
  force: boolean,
  log: Logger,
): Promise<BackupResult> {
  const path = resolve(file);
  const exists = (): BackupError =>
    new BackupError('backup_exists', `${path} exists: choose another name, or --force to replace it`);
  if (!force && (await lstat(path).catch(() => undefined))) throw exists();
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const unwritable = (err: unknown): BackupError =>
    new BackupError('backup_unwritable', `cannot write ${path}: ${(err as Error).message}`, { cause: err });
  let handle: FileHandle;
  try {
    handle = await open(temp, 'wx', 0o600); // O_EXCL: never through a symbolic link
  } catch (err) {
    throw unwritable(err);
  }
  try {
    await handle.chmod(0o600).catch((err: unknown) => {
      throw unwritable(err);
    }); // whatever the umask
    const gzip = createGzip();
    const output = handle.createWriteStream({ flush: true });
    const written = pipeline(gzip, output);
    written.catch(() => undefined); // awaited below
    let summary: BackupSummary;
    try {
      summary = await withSystem(config, systemOptions('either', log), ({ sql }) => writeBackup(sql, gzip));
    } catch (err) {
      const fileError = output.errored; // a full disk: the write failed, not the database
      gzip.destroy();
      throw fileError ? unwritable(fileError) : err;
    }
    gzip.end();
    await written.catch((err: unknown) => {
      throw unwritable(err);
    });
    const bytes = (await lstat(temp)).size;
    await install(temp, path, force, exists);
    await syncDir(dirname(path));
    return { file: path, bytes, ...summary };
  } finally {
    await handle.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
  }
}

/** The finished temporary file becomes `path`: link (fails when it exists), or rename (--force). */
async function install(temp: string, path: string, force: boolean, exists: () => BackupError): Promise<void> {
  if (force) return rename(temp, path);
  try {
    await link(temp, path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw exists();
    // a file system without hard links: check, then rename (not atomic against a racing writer)
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS') throw err;
    if (await lstat(path).catch(() => undefined)) throw exists();
    await rename(temp, path);
  }
}

async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r').catch(() => undefined);
  await handle?.sync().catch(() => undefined);
  await handle?.close();
}

export interface RestoreResult extends RestoreSummary {
  file: string;
  createdAt: string;
}

/**
 * Replaces the database's contents with the backup in `file` (one transaction: on any failure
 * nothing changed). The header is checked before the database is opened.
 */
export async function restoreCommand(
  config: SystemConfig,
  file: string,
  log: Logger,
): Promise<RestoreResult> {
  const path = resolve(file);
  const backup = await openBackup(path);
  try {
    const migrations = await loadMigrations();
    const summary = await withSystem(config, systemOptions('stopped', log), ({ sql }) =>
      restoreBackup(sql, backup.header, backup.reader, {
        migrations,
        hostDeadAfterMs: config.policy.hostDeadAfterMs,
        log,
      }),
    );
    return { file: path, createdAt: backup.header.createdAt, ...summary };
  } catch (err) {
    throw err instanceof BackupError ? err.about(path) : err;
  } finally {
    await backup.close();
  }
}

interface OpenBackup {
  header: BackupHeader;
  reader: BackupReader;
  close(): Promise<void>;
}

/** The file opened and its header read and checked: a bad file stops here, before the database. */
async function openBackup(path: string): Promise<OpenBackup> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
    if (!(await handle.stat()).isFile()) {
      await handle.close();
      throw new Error('not a regular file');
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BackupError(
      'backup_unreadable',
      `${path}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`,
      { cause: err },
    );
  }
  const input = handle.createReadStream();
  const gunzip = createGunzip();
  const piped = pipeline(input, gunzip);
  piped.catch(() => undefined); // its error reaches the reader through gunzip
  let headerRead = false;
  let damaged = false;
  async function* decompressed(): AsyncGenerator<Buffer> {
    try {
      for await (const chunk of gunzip) yield chunk as Buffer;
    } catch (err) {
      damaged = true;
      const e = err as NodeJS.ErrnoException;
      const notGzip = !headerRead && e.code === 'Z_DATA_ERROR' && /header/.test(e.message);
      throw new BackupError(
        notGzip ? 'backup_unreadable' : 'backup_corrupt',
        notGzip ? 'not a modemfleet backup (not gzip data)' : `damaged or truncated (${e.message})`,
        { cause: err },
      );
    }
  }
  const reader = new BackupReader(decompressed());
  const close = async (): Promise<void> => {
    gunzip.destroy();
    input.destroy();
    await handle.close().catch(() => undefined);
  };
  try {
    const line = await reader.line(BACKUP_LIMITS.headerBytes, 'the header');
    headerRead = true;
    if (line === undefined) throw new BackupError('backup_unreadable', 'not a modemfleet backup (empty)');
    return { header: parseHeader(line.toString('utf8')), reader, close };
  } catch (err) {
    await close();
    if (!(err instanceof BackupError)) throw err;
    throw (
      err.code === 'backup_corrupt' && !damaged
        ? new BackupError('backup_unreadable', `not a modemfleet backup (${err.message})`, { cause: err })
        : err
    ).about(path);
  }
}
