import { readFile, readdir, readlink, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { spawnChild, unprivilegedPrefix, type Child, type ChildUser } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';
import { settlesWithin, sleep } from '../util/time.js';

/** The proxy programs modemfleet runs (3proxy in production; microsocks and tinyproxy from Debian). */
export const PROXY_PROGRAMS = ['3proxy', 'microsocks', 'tinyproxy'] as const;

export interface ProxyProcessOptions {
  /** Pid file name stem, e.g. `866834040000017-socks`. */
  name: string;
  /** Program and arguments (never a shell line). */
  argv: readonly [string, ...string[]];
  /** Run inside this network namespace (`ip netns exec NS`, which execs the program in place). */
  netns?: string | undefined;
  /** Directory of the pid files (the start-up sweep reads it). */
  runDir: string;
  /** Ready = every one of these accepts a TCP connection (3proxy exits 0 on a bad config and stays
   * up when a port is taken, so neither the exit code nor "still running" means ready). */
  ports: { host: string; port: number }[];
  /**
   * Run as this uid/gid (the modem's own: its routing rule and egress policy match it). Whatever
   * the user, the proxy starts with no capabilities, no supplementary groups, `no_new_privs` and
   * the minimal environment of `childEnv()` (src/process/run.ts).
   */
  user?: ChildUser | undefined;
  /**
   * Arguments the program blanks itself at start (microsocks's `-P` password): once the ports are
   * ready, `/proc/PID/cmdline` must no longer hold any of them, or the process is stopped
   * (`proxy_secret_exposed`). Between exec and that blanking, a local user could read them.
   */
  secrets?: readonly string[] | undefined;
  readyTimeoutMs?: number;
  stopTimeoutMs?: number;
  /**
   * How a reload (SIGUSR1) shows it took effect: lines on stdout (tinyproxy, with no LogFile, logs
   * there: "Reloading config file finished" or "... failed!"); `reload()` waits for one. Without it (3proxy, which says
   * nothing) `reload()` waits `reloadSettleMs` (3proxy re-reads its config in ~15 ms).
   */
  reloadLog?: { done: string; failed: string } | undefined;
  reloadSettleMs?: number | undefined;
  /** The program re-reads a configuration on SIGUSR1 (3proxy, tinyproxy); microsocks would die of it. */
  reloads?: boolean | undefined;
  log?: Logger;
}

export interface ProxyExit {
  code: number | undefined;
  signal: string | undefined;
  stderr: string;
}

const MAX_STDERR = 4096;

/**
 * One proxy process in its own process group, with a pid file, so that neither a crash of ours nor
 * of the proxy can leave an instance behind unseen (3proxy sets SO_REUSEPORT: a leftover and its
 * replacement would silently share a port). Stop: SIGTERM to the group, SIGKILL after a timeout.
 */
export class ProxyProcess {
  private child: Child | undefined;
  private stderr = '';
  /** stderr's unfinished last line, and the reload outcomes seen on it so far. */
  private partial = '';
  private readonly reloads = { done: 0, failed: 0 };
  private exit: Promise<ProxyExit> | undefined;
  private readonly log: Logger;

  constructor(private readonly options: ProxyProcessOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'proxy', proxy: options.name });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  private get pidFile(): string {
    return join(this.options.runDir, `${this.options.name}.pid`);
  }

  /** Resolves when the process exits (after `start`). */
  exited(): Promise<ProxyExit> {
    if (!this.exit)
      return Promise.reject(new ModemfleetError('proxy_not_started', 'the proxy was not started'));
    return this.exit;
  }

  async start(): Promise<void> {
    if (this.child) return;
    const [program, ...programArgs] = this.options.argv;
    const { netns, user } = this.options;
    // `ip netns exec` needs our capabilities (setns), so inside a namespace the uid and every
    // capability are dropped after it, by setpriv; each program execs the next in place, so the
    // pid is the proxy's own
    const child = netns
      ? spawnChild('ip', ['netns', 'exec', netns, ...unprivilegedPrefix(user), program, ...programArgs], {
          detached: true,
          cleanup: false,
          stderr: 'pipe',
          stdout: this.options.reloadLog ? 'pipe' : 'ignore',
        })
      : spawnChild(program, programArgs, {
          detached: true, // its own process group: the whole group is signalled
          cleanup: false, // we stop it ourselves, group and all
          stderr: 'pipe',
          stdout: this.options.reloadLog ? 'pipe' : 'ignore',
          user: user ?? 'self',
        });
    this.child = child;
    child.stderr?.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString('utf8')).slice(-MAX_STDERR);
    });
    // tinyproxy logs to stdout once its logging is up (its reload notices among them)
    child.stdout?.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      const marks = this.options.reloadLog;
      if (!marks) return;
      const lines = (this.partial + text).split('\n');
      this.partial = (lines.pop() ?? '').slice(-MAX_STDERR);
      for (const line of lines) {
        if (line.includes(marks.done)) this.reloads.done++;
        else if (line.includes(marks.failed)) this.reloads.failed++;
      }
    });
    this.exit = child.then((r) => ({
      code: r.exitCode,
      signal: r.signal,
      stderr: this.stderr,
    }));
    if (child.pid === undefined) {
      const r = await this.exit;
      throw new ModemfleetError(
        'proxy_start_failed',
        `${basename(program)} did not start: ${r.stderr.slice(0, 300)}`,
      );
    }
    await writeFile(this.pidFile, `${child.pid} ${basename(program)}\n`);
    try {
      await this.waitReady(child);
      await this.checkSecretsBlanked(child);
    } catch (err) {
      await this.stop();
      throw err;
    }
    this.log.info({ pid: child.pid }, 'proxy ready');
  }

  private async waitReady(child: Child): Promise<void> {
    const deadline = Date.now() + (this.options.readyTimeoutMs ?? 5_000);
    let exited = false;
    void this.exit?.then(() => (exited = true));
    // inside a namespace the port is not reachable from here: its listening sockets are read from
    // /proc/PID/net/tcp, which shows the namespace of that process
    const ready = (host: string, port: number): Promise<boolean> =>
      this.options.netns && child.pid !== undefined ? listening(child.pid, port) : accepts(host, port);
    for (const { host, port } of this.options.ports) {
      while (!(await ready(host, port))) {
        if (exited || child.exitCode !== null)
          throw new ModemfleetError(
            'proxy_exited',
            `${basename(this.options.argv[0])} exited before listening on ${host}:${port}: ${this.stderr.trim().slice(0, 300)}`,
          );
        if (Date.now() > deadline)
          throw new ModemfleetError(
            'proxy_not_ready',
            `${basename(this.options.argv[0])} does not accept connections on ${host}:${port}: ${this.stderr.trim().slice(0, 300)}`,
          );
        await sleep(20);
      }
    }
  }

  private async checkSecretsBlanked(child: Child): Promise<void> {
    const secrets = (this.options.secrets ?? []).filter((x) => x.length > 0);
    if (secrets.length === 0 || child.pid === undefined) return;
    if (await cmdlineHolds(child.pid, secrets))
      throw new ModemfleetError(
        'proxy_secret_exposed',
        `${basename(this.options.argv[0])} still shows its password in /proc/${child.pid}/cmdline; stopped`,
      );
  }

  /**
   * SIGUSR1: 3proxy and tinyproxy re-read their configuration (a new egress address, logins, an
   * allowlist); open connections live on. Resolves once the reload took effect (see `reloadLog`);
   * rejects `proxy_reload_failed` when the program kept its old configuration, `proxy_not_reloaded`
   * when it said nothing in time. A process not running, or a program without reload (`reloads`),
   * resolves at once (a start reads the file; microsocks has no file).
   */
  async reload(timeoutMs = 3_000): Promise<void> {
    const pid = this.child?.pid;
    if (pid === undefined || this.options.reloads !== true) return;
    const before = { ...this.reloads };
    process.kill(pid, 'SIGUSR1');
    const name = basename(this.options.argv[0]);
    if (!this.options.reloadLog) return sleep(this.options.reloadSettleMs ?? 0);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.reloads.failed > before.failed)
        throw new ModemfleetError(
          'proxy_reload_failed',
          `${name} kept its old configuration: ${this.stderr.trim().slice(-300)}`,
        );
      if (this.reloads.done > before.done) return;
      if (this.child?.pid !== pid) return; // stopped meanwhile: its replacement reads the file
      if (Date.now() > deadline)
        throw new ModemfleetError(
          'proxy_not_reloaded',
          `${name} did not confirm a reload within ${timeoutMs} ms (${this.reloads.done} before)`,
        );
      await sleep(5);
    }
  }

  /** SIGTERM to the process group, SIGKILL after `stopTimeoutMs`; removes the pid file. Idempotent. */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child?.pid !== undefined && child.exitCode === null) {
      signalGroup(child.pid, 'SIGTERM');
      const stopped = this.exit ? await settlesWithin(this.exit, this.options.stopTimeoutMs ?? 3_000) : true;
      if (!stopped) {
        this.log.warn({ pid: child.pid }, 'proxy ignored SIGTERM; killing its process group');
        signalGroup(child.pid, 'SIGKILL');
        await this.exit;
      }
    }
    await rm(this.pidFile, { force: true });
  }
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

/** Whether the command line of process `pid` (its argv, as other local users see it) holds a secret. */
export async function cmdlineHolds(pid: number, secrets: readonly string[]): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0').some((arg) => secrets.some((x) => arg.includes(x)));
}

/** A TCP connection to host:port succeeds (and is closed at once). */
export function accepts(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

/**
 * Process `pid` itself listens on TCP `port` (read from /proc, so it works inside any network
 * namespace): the listening socket in its namespace's table must be one of its own descriptors,
 * not another program's that happens to hold the port.
 */
export async function listening(pid: number, port: number): Promise<boolean> {
  const table = await readFile(`/proc/${pid}/net/tcp`, 'utf8').catch(() => '');
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode: state 0A is LISTEN
  const inodes = table
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hex}`) === true && f[3] === '0A')
    .map((f) => f[9]);
  if (inodes.length === 0) return false;
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (inodes.some((inode) => target === `socket:[${inode}]`)) return true;
  }
  return false;
}

/**
 * Start-up sweep: every process named in a pid file of `runDir` that is still one of our proxy
 * programs is killed with its group, and the pid files removed. Run before any proxy starts, so that
 * an instance left by a crashed supervisor never shares a port with its replacement.
 */
export async function sweepProxies(runDir: string, log: Logger = silentLogger): Promise<number> {
  let files: string[];
  try {
    files = (await readdir(runDir)).filter((f) => f.endsWith('.pid'));
  } catch {
    return 0;
  }
  let killed = 0;
  for (const f of files) {
    const path = join(runDir, f);
    const [pidText, program] = (await readFile(path, 'utf8').catch(() => '')).trim().split(/\s+/);
    const pid = Number(pidText);
    if (Number.isInteger(pid) && pid > 1 && (await isProxy(pid, program))) {
      signalGroup(pid, 'SIGKILL');
      killed++;
      log.warn({ pid, program, pidFile: f }, 'killed a proxy left by a previous run');
    }
    await rm(path, { force: true });
  }
  return killed;
}

/** The pid still belongs to the program the pid file names (pids are reused). */
async function isProxy(pid: number, program: string | undefined): Promise<boolean> {
  if (!program || !(PROXY_PROGRAMS as readonly string[]).includes(program)) return false;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  const argv0 = cmdline.split('\0')[0] ?? '';
  return basename(argv0) === program;
}
