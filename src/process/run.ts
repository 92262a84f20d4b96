import { readFileSync } from 'node:fs';
import { execa, type ResultPromise } from 'execa';

/**
 * The one process module: every external program modemfleet runs outside `src/net/` goes through
 * here (and `src/net/` uses it too), always as an argument array (no shell), with a minimal
 * environment of our choosing. A child never inherits the supervisor's secrets
 * (`MODEMFLEET_API_TOKEN`, `DATABASE_URL`, ...): it gets `childEnv()` plus what the caller names.
 */

/** Variables a child may see from our own environment: finding programs, locale, time zone, temp dir. */
const PASSED_THROUGH = ['PATH', 'LANG', 'LC_ALL', 'LC_CTYPE', 'LC_MESSAGES', 'TZ', 'TMPDIR'] as const;

const FALLBACK_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * The environment handed to a child: the few variables of `PASSED_THROUGH` that are set here, then
 * `extra` (which wins). Nothing else: no credentials, no tokens, no database URL.
 */
export function childEnv(extra: Readonly<Record<string, string>> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of PASSED_THROUGH) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  env['PATH'] ??= FALLBACK_PATH;
  return { ...env, ...extra };
}

/** Capability numbers (linux/capability.h) that decide how a child is started. */
export const CAP = {
  chown: 0,
  kill: 5,
  setgid: 6,
  setuid: 7,
  setpcap: 8,
  net_admin: 12,
  net_raw: 13,
  sys_admin: 21,
} as const;

let ownCaps: bigint | undefined;

/** This process's effective capabilities (`CapEff` of /proc/self/status); 0 where unreadable. */
export function effectiveCapabilities(): bigint {
  if (ownCaps === undefined) {
    let text = '';
    try {
      text = readFileSync('/proc/self/status', 'utf8');
    } catch {
      // not Linux, or no /proc: nothing to rely on
    }
    const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(text)?.[1];
    ownCaps = hex ? BigInt(`0x${hex}`) : 0n;
  }
  return ownCaps;
}

/** This process holds capability `cap` (root holds them all). */
export function hasCapability(cap: number): boolean {
  return (effectiveCapabilities() >> BigInt(cap)) & 1n ? true : false;
}

/** Can start a child under another uid/gid (root, or CAP_SETUID and CAP_SETGID as the unit grants). */
export function canChangeUser(): boolean {
  return hasCapability(CAP.setuid) && hasCapability(CAP.setgid);
}

/** Who an unprivileged child runs as. */
export interface ChildUser {
  uid: number;
  gid: number;
}

/**
 * The `setpriv` (util-linux) prefix that starts a program with nothing: as `user` (its uid and gid,
 * no supplementary groups), with empty inheritable and ambient capability sets, so it execs with no
 * capabilities at all, whatever this process holds (ambient capabilities survive a plain
 * setuid/setgid: a child of a daemon with AmbientCapabilities= kept all of them, CapEff=CapAmb),
 * `no_new_privs` (no setuid binary or file capability gives any back), and an empty bounding set
 * where this process may empty it (CAP_SETPCAP: root). Without `user` only the capabilities go.
 * setpriv execs the program in place: the child's pid is the program's.
 */
export function unprivilegedPrefix(user?: ChildUser): string[] {
  const id = (n: number, what: string): string => {
    if (!Number.isInteger(n) || n < 1 || n > 4_294_967_294) throw new RangeError(`${what}: not a uid/gid`);
    return String(n);
  };
  return [
    'setpriv',
    ...(user ? [`--reuid=${id(user.uid, 'uid')}`, `--regid=${id(user.gid, 'gid')}`, '--clear-groups'] : []),
    '--inh-caps=-all',
    '--ambient-caps=-all',
    ...(hasCapability(CAP.setpcap) ? ['--bounding-set=-all'] : []),
    '--no-new-privs',
    '--',
  ];
}

/** `[file, args]` of a program started through `unprivilegedPrefix` when `user` is given. */
function command(
  file: string,
  args: readonly string[],
  user: ChildUser | 'self' | undefined,
): [string, string[]] {
  if (user === undefined) return [file, [...args]];
  const [setpriv = 'setpriv', ...flags] = unprivilegedPrefix(user === 'self' ? undefined : user);
  return [setpriv, [...flags, file, ...args]];
}

/** A timed-out child gets SIGTERM, then SIGKILL this much later (a stuck one may ignore TERM). */
export const FORCE_KILL_MS = 1_000;

export interface RunOptions {
  /** SIGTERM after this long, SIGKILL `forceKillMs` later; the result says `timedOut`. */
  timeoutMs?: number | undefined;
  forceKillMs?: number;
  /** Written to the child's stdin (else stdin is /dev/null). */
  input?: string | undefined;
  /** Added to `childEnv()`. */
  env?: Readonly<Record<string, string>>;
  /**
   * Run as this uid/gid with no capabilities (`unprivilegedPrefix`); `'self'`: as we are,
   * without capabilities. Unset: as we are (helpers that need ours: `ip`, `nft`).
   */
  user?: ChildUser | 'self' | undefined;
  cwd?: string;
}

export interface RunResult {
  /** undefined when killed by a signal or not started. */
  exitCode: number | undefined;
  signal: string | undefined;
  stdout: string;
  stderr: string;
  timedOut: boolean;
  /** Not started at all (ENOENT, EACCES, ...): the reason is in `stderr`. */
  spawnFailed: boolean;
  /** exitCode 0 and not timed out. */
  ok: boolean;
}

/**
 * Runs a program to completion and collects its output. Never rejects for an exit status, a
 * timeout or a missing program: the caller decides from the result (and names its own error code).
 */
export async function run(
  file: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const [program, argv] = command(file, args, options.user);
  const result = await execa(program, argv, {
    reject: false,
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
    forceKillAfterDelay: options.forceKillMs ?? FORCE_KILL_MS,
    ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
    env: childEnv(options.env),
    extendEnv: false,
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  });
  const spawnFailed = result.exitCode === undefined && result.signal === undefined && !result.timedOut;
  return {
    exitCode: result.exitCode,
    signal: result.signal,
    stdout: String(result.stdout ?? ''),
    stderr: spawnFailed && !result.stderr ? (result.message ?? 'not started') : String(result.stderr ?? ''),
    timedOut: result.timedOut,
    spawnFailed,
    ok: result.exitCode === 0 && !result.timedOut,
  };
}

/** A long-running child (proxy, server, monitor, PTY): awaiting it resolves when it ends. */
export type Child = ResultPromise;

export interface SpawnOptions {
  /** `pipe` where the caller reads or writes the stream; `ignore` (the default) otherwise. */
  stdin?: 'pipe' | 'ignore';
  stdout?: 'pipe' | 'ignore';
  stderr?: 'pipe' | 'ignore';
  /** Its own process group, so the whole group can be signalled (`process.kill(-pid, ...)`). */
  detached?: boolean;
  /** Killed when this process exits (execa's exit hook); false when the caller stops it itself. */
  cleanup?: boolean;
  /** Added to `childEnv()`. */
  env?: Readonly<Record<string, string>>;
  /** As in `RunOptions`: its own uid/gid and no capabilities. */
  user?: ChildUser | 'self' | undefined;
  timeoutMs?: number | undefined;
}

/**
 * Starts a long-running program. Its output is streamed, never buffered (read `child.stdout` /
 * `child.stderr` when piped). Awaiting the child never rejects: it resolves with the exit.
 */
export function spawnChild(file: string, args: readonly string[], options: SpawnOptions = {}): Child {
  const [program, argv] = command(file, args, options.user);
  return execa(program, argv, {
    reject: false,
    buffer: false,
    stdin: options.stdin ?? 'ignore',
    stdout: options.stdout ?? 'ignore',
    stderr: options.stderr ?? 'ignore',
    detached: options.detached ?? false,
    cleanup: options.cleanup ?? true,
    env: childEnv(options.env),
    extendEnv: false,
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
  });
}
