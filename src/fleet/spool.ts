import { open, readFile, readdir, rename, rm, stat, mkdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { ModemfleetError, coerceError } from '../util/errors.js';

/**
 * A local append-only spool of JSON lines for records that could not reach PostgreSQL. It survives
 * a crash: `open()` finds what a previous process left, in order. Writing is bounded by `maxBytes`.
 * fsync policy: `always` (each append is on disk before it returns: survives a power cut) or `never`
 * (survives a crash of the supervisor, not of the host).
 *
 * Files: `current.jsonl` takes appends; `replay-<n>.jsonl` are sealed segments being replayed.
 */
export type FsyncPolicy = 'always' | 'never';

export interface SpoolOptions {
  dir: string;
  maxBytes: number;
  fsync: FsyncPolicy;
}

export class SpoolFullError extends ModemfleetError {
  constructor(maxBytes: number) {
    super('spool_full', `the spool reached its limit of ${maxBytes} bytes; records are being dropped`);
    this.name = 'SpoolFullError';
  }
}

const CURRENT = 'current.jsonl';
const SEGMENT = /^replay-(\d+)\.jsonl$/;
const MAX_LINE = 64 * 1024;

export class Spool<T> {
  private handle: FileHandle | undefined;
  private bytes = 0;
  private nextSegment = 0;

  constructor(private readonly options: SpoolOptions) {}

  get size(): number {
    return this.bytes;
  }

  /** Open (creating the directory), counting what earlier processes left behind. */
  async open(): Promise<void> {
    try {
      await mkdir(this.options.dir, { recursive: true, mode: 0o700 });
      this.bytes = 0;
      for (const name of await readdir(this.options.dir)) {
        const m = SEGMENT.exec(name);
        if (m) this.nextSegment = Math.max(this.nextSegment, Number(m[1]) + 1);
        if (m || name === CURRENT) this.bytes += (await stat(join(this.options.dir, name))).size;
      }
      this.handle = await open(join(this.options.dir, CURRENT), 'a', 0o600);
    } catch (err) {
      throw new ModemfleetError(
        'spool_unavailable',
        `cannot open the spool in ${this.options.dir}: ${coerceError(err).message}`,
        {
          cause: err,
        },
      );
    }
  }

  async close(): Promise<void> {
    await this.handle?.close();
    this.handle = undefined;
  }

  /**
   * Append records in order. Throws SpoolFullError (the limit, or the file system is full) or
   * spool_unavailable; either way nothing of this batch stays in the file (a torn write is cut off,
   * so it cannot swallow the next batch's first line). A spool that could not be opened is tried
   * again here.
   */
  async append(records: readonly T[]): Promise<void> {
    if (records.length === 0) return;
    const handle = await this.ensureOpen();
    const text = records.map((r) => JSON.stringify(r)).join('\n') + '\n';
    const size = Buffer.byteLength(text);
    if (this.bytes + size > this.options.maxBytes) throw new SpoolFullError(this.options.maxBytes);
    let before: number | undefined;
    try {
      before = (await handle.stat()).size;
      await handle.appendFile(text);
      if (this.options.fsync === 'always') await handle.datasync();
    } catch (err) {
      if (before !== undefined) await handle.truncate(before).catch(() => undefined);
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOSPC' || code === 'EDQUOT') {
        throw new ModemfleetError(
          'spool_full',
          `the file system of the spool in ${this.options.dir} is full (${code}); records are being dropped`,
          { cause: err },
        );
      }
      throw new ModemfleetError(
        'spool_unavailable',
        `cannot write the spool in ${this.options.dir}: ${coerceError(err).message}`,
        { cause: err },
      );
    }
    this.bytes += size;
  }

  private async ensureOpen(): Promise<FileHandle> {
    if (!this.handle) await this.open();
    if (!this.handle) throw new ModemfleetError('spool_unavailable', 'the spool is not open');
    return this.handle;
  }

  /** True when nothing is spooled. */
  isEmpty(): boolean {
    return this.bytes === 0;
  }

  /**
   * Replay everything spooled, oldest first: the current file is sealed into a segment (new appends
   * go to a fresh current file), then each segment is handed to `consume` in chunks and deleted once
   * consumed. If `consume` throws, the segment stays for the next replay (consumers are idempotent).
   * Returns the number of records replayed.
   */
  async replay(consume: (records: T[]) => Promise<void>, chunk = 1000): Promise<number> {
    try {
      await this.ensureOpen();
    } catch (err) {
      if (this.bytes === 0) return 0; // never opened: nothing of ours can be in it
      throw err;
    }
    const currentPath = join(this.options.dir, CURRENT);
    if ((await stat(currentPath)).size > 0) {
      await this.handle?.close();
      await rename(currentPath, join(this.options.dir, `replay-${this.nextSegment++}.jsonl`));
      this.handle = await open(currentPath, 'a', 0o600);
    }
    const segments = (await readdir(this.options.dir))
      .map((name) => ({ name, n: Number(SEGMENT.exec(name)?.[1] ?? NaN) }))
      .filter((s) => Number.isInteger(s.n))
      .sort((a, b) => a.n - b.n);
    let replayed = 0;
    for (const segment of segments) {
      const path = join(this.options.dir, segment.name);
      const size = (await stat(path)).size;
      const records = parseLines<T>(await readFile(path, 'utf8'));
      for (let i = 0; i < records.length; i += chunk) await consume(records.slice(i, i + chunk));
      await rm(path);
      this.bytes = Math.max(0, this.bytes - size);
      replayed += records.length;
    }
    return replayed;
  }
}

/** Lines of a spool file; a torn last line (crash in mid-write) and garbage are skipped. */
export function parseLines<T>(text: string): T[] {
  const out: T[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.length > MAX_LINE) continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // torn write: the rest of the file is still good
    }
  }
  return out;
}
