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
  uid?: number | undefined;
  gid?: number | undefined;
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
  const result = await execa(file, args, {
    reject: false,
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
    forceKillAfterDelay: options.forceKillMs ?? FORCE_KILL_MS,
    ...(options.input !== undefined ? { input: options.input } : { stdin: 'ignore' as const }),
    env: childEnv(options.env),
    extendEnv: false,
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
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
  uid?: number | undefined;
  gid?: number | undefined;
  timeoutMs?: number | undefined;
}

/**
 * Starts a long-running program. Its output is streamed, never buffered (read `child.stdout` /
 * `child.stderr` when piped). Awaiting the child never rejects: it resolves with the exit.
 */
export function spawnChild(file: string, args: readonly string[], options: SpawnOptions = {}): Child {
  return execa(file, args, {
    reject: false,
    buffer: false,
    stdin: options.stdin ?? 'ignore',
    stdout: options.stdout ?? 'ignore',
    stderr: options.stderr ?? 'ignore',
    detached: options.detached ?? false,
    cleanup: options.cleanup ?? true,
    env: childEnv(options.env),
    extendEnv: false,
    ...(options.uid !== undefined ? { uid: options.uid } : {}),
    ...(options.gid !== undefined ? { gid: options.gid } : {}),
    ...(options.timeoutMs !== undefined ? { timeout: options.timeoutMs } : {}),
  });
}
