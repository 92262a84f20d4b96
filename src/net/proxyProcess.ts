import { readFile, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { spawnChild, unprivilegedPrefix, type Child, type ChildUser } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';
import { settlesWithin, sleep } from '../util/time.js';
import {
  formatPidFile,
  listening,
  procStat,
  processAlive,
  stopProcess,
  type ProxyRecord,
  type ProxyRecordMeta,
} from './proxyRecord.js';

export { PROXY_PROGRAMS, isProxy, listening } from './proxyRecord.js';

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
  /**
   * What the next run needs to adopt the process (src/net/proxyRecord.ts), written into its pid file
   * as the second line; without it the pid file has only `PID PROGRAM` and the next run kills it.
   */
  record?: ProxyRecordMeta | undefined;
  /** How often an adopted process (not our child: no exit event) is checked for life (default 1 s). */
  pollMs?: number | undefined;
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
 *
 * Either our child (`start`), or a process a previous run handed over (`adopt`): that one is not our
 * child, so its exit is found by checking /proc every `pollMs` (pid and start time). `detach` hands
 * the process over to the next run: it keeps running with its pid file, and nothing of ours waits
 * for it any more.
 */
export class ProxyProcess {
  private child: Child | undefined;
  private adopted: { pid: number; start: number } | undefined;
  private startTime: number | undefined;
  private poll: NodeJS.Timeout | undefined;
  /** Handed over to the next run: nothing here touches it (nor its pid file) any more. */
  private detached = false;
  private stderr = '';
  /** stderr's unfinished last line, and the reload outcomes seen on it so far. */
  private partial = '';
  private readonly reloads = { done: 0, failed: 0 };
  private exit: Promise<ProxyExit> | undefined;
  private readonly log: Logger;

  constructor(private readonly options: ProxyProcessOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'proxy', proxy: options.name });
  }

  /**
   * A process a previous run left serving (checked by the caller: the same process, listening,
   * started with what this run would start), supervised from now on as if it were ours.
   */
  static async adopt(
    options: ProxyProcessOptions,
    left: { pid: number; start: number },
  ): Promise<ProxyProcess> {
    const p = new ProxyProcess(options);
    p.adopted = left;
    p.startTime = left.start;
    let resolveExit: (exit: ProxyExit) => void = () => undefined;
    p.exit = new Promise((resolve) => (resolveExit = resolve));
    const check = async (): Promise<void> => {
      if (p.adopted !== left || (await processAlive(left.pid, left.start))) return;
      clearInterval(p.poll);
      p.poll = undefined;
      resolveExit({
        code: undefined,
        signal: undefined,
        stderr: '(an adopted process: its exit status is not ours to see)',
      });
    };
    p.poll = setInterval(() => void check(), options.pollMs ?? 1_000);
    p.poll.unref();
    await p.writePidFile();
    p.log.info({ pid: left.pid }, 'proxy adopted from the previous run');
    return p;
  }

  get pid(): number | undefined {
    return this.child?.pid ?? this.adopted?.pid;
  }

  /** Was handed over by a previous run (not our child). */
  get isAdopted(): boolean {
    return this.adopted !== undefined;
  }

  /**
   * A reload can be confirmed: not an adopted process whose confirmation is a line on stdout
   * (tinyproxy's stdout went with the run that started it). Such a process is replaced instead.
   */
  get reloadConfirmable(): boolean {
    return !(this.adopted && this.options.reloadLog);
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
    if (this.child || this.adopted || this.detached) return;
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
    this.startTime = (await procStat(child.pid))?.start;
    await this.writePidFile();
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
   * resolves at once (a start reads the file; microsocks has no file). An adopted process whose
   * reload only shows on stdout (tinyproxy) is refused (`proxy_not_reloaded`): replace it instead.
   */
  async reload(timeoutMs = 3_000): Promise<void> {
    const pid = this.pid;
    if (pid === undefined || this.options.reloads !== true) return;
    if (!this.reloadConfirmable)
      throw new ModemfleetError(
        'proxy_not_reloaded',
        `${basename(this.options.argv[0])} was adopted from the previous run: its stdout is not ours, a reload could not be confirmed`,
      );
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
      if (this.pid !== pid) return; // stopped meanwhile: its replacement reads the file
      if (Date.now() > deadline)
        throw new ModemfleetError(
          'proxy_not_reloaded',
          `${name} did not confirm a reload within ${timeoutMs} ms (${this.reloads.done} before)`,
        );
      await sleep(5);
    }
  }

  /** The pid file: `PID PROGRAM`, and the record when the data plane gave one. */
  private async writePidFile(): Promise<void> {
    const pid = this.pid;
    if (pid === undefined) return;
    const program = basename(this.options.argv[0]);
    const meta = this.options.record;
    const record: ProxyRecord | undefined =
      meta && this.startTime !== undefined
        ? {
            v: 1,
            name: this.options.name,
            pid,
            program,
            start: this.startTime,
            ports: this.options.ports.map((p) => p.port),
            ...meta,
          }
        : undefined;
    await writeFile(this.pidFile, formatPidFile(pid, program, record), { mode: 0o600 });
  }

  /** A new record (reloaded with new settings): the next run compares its own plan with it. */
  async updateRecord(meta: ProxyRecordMeta): Promise<void> {
    this.options.record = meta;
    await this.writePidFile();
  }

  /**
   * Hands the process over to the next run: it keeps serving, its pid file stays, and nothing here
   * holds it (no poll, no pipe, no child handle keeping this process alive). Its stderr (and
   * tinyproxy's stdout) pipe ends with us: the proxies ignore SIGPIPE (microsocks and tinyproxy
   * measured), so a later write to it fails and nothing else happens.
   */
  detach(): void {
    this.detached = true;
    clearInterval(this.poll);
    this.poll = undefined;
    this.adopted = undefined;
    const child = this.child;
    this.child = undefined;
    if (!child) return;
    child.stderr?.destroy();
    child.stdout?.destroy();
    child.unref();
  }

  /** SIGTERM to the process group, SIGKILL after `stopTimeoutMs`; removes the pid file. Idempotent. */
  async stop(): Promise<void> {
    if (this.detached) return;
    const adopted = this.adopted;
    if (adopted) {
      this.adopted = undefined;
      clearInterval(this.poll);
      this.poll = undefined;
      const gone = await stopProcess(adopted.pid, adopted.start, this.options.stopTimeoutMs ?? 3_000);
      if (!gone) this.log.warn({ pid: adopted.pid }, 'an adopted proxy outlived SIGKILL');
      await rm(this.pidFile, { force: true });
      return;
    }
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
