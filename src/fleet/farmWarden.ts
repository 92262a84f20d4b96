import { silentLogger, type Logger } from '../log.js';
import type { SweepResult } from '../store/liveness.js';
import type { Store } from '../store/store.js';
import { coerceError } from '../util/errors.js';

export interface FarmWardenOptions {
  store: Pick<Store, 'sweepDeadHosts' | 'releaseFarmLease'>;
  /** How often the sweep runs (policy `hostHeartbeatMs`). */
  intervalMs: number;
  /** A host silent for longer is dead (policy `hostDeadAfterMs`). */
  deadAfterMs: number;
  log?: Logger;
}

export interface FarmWardenStats {
  /** Sweeps tried, and the ones done here because this host held the `farm` lease. */
  ticks: number;
  sweeps: number;
  hostsMarked: number;
  commandsFailed: number;
  errors: number;
  /** This host held the lease at its last tick. */
  holder: boolean;
}

/**
 * The work one host does for the whole farm, claimed through the database: every `intervalMs` each
 * host's warden tries the `farm` lease (a `leases` row, expiring after three intervals unless its
 * holder renews it), and the one holding it marks hosts silent for `deadAfterMs` stale and fails
 * their modems' commands with `host_unavailable` (src/store/liveness.ts). A host that dies loses the
 * lease when it expires and another one takes it; a host that stops gracefully gives it up.
 * Schedules are not part of it: a dead host's modems are not rotated from elsewhere (another host
 * cannot reach them), and webhook deliveries are claimed row by row (`FOR UPDATE SKIP LOCKED`).
 */
export class FarmWarden {
  readonly stats: FarmWardenStats = {
    ticks: 0,
    sweeps: 0,
    hostsMarked: 0,
    commandsFailed: 0,
    errors: 0,
    holder: false,
  };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private readonly log: Logger;

  constructor(private readonly options: FarmWardenOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'warden' });
  }

  start(): void {
    this.stopped = false;
    this.timer = setInterval(() => this.tick(), this.options.intervalMs);
    this.timer.unref();
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
    if (this.stats.holder) {
      this.stats.holder = false;
      await this.options.store.releaseFarmLease();
    }
  }

  /** One sweep now (unless one is running). */
  tick(): void {
    if (this.stopped || this.running) return;
    this.running = this.sweep().finally(() => (this.running = undefined));
  }

  private async sweep(): Promise<void> {
    this.stats.ticks++;
    let result: SweepResult;
    try {
      result = await this.options.store.sweepDeadHosts({
        deadAfterMs: this.options.deadAfterMs,
        leaseMs: this.options.intervalMs * 3,
      });
    } catch (err) {
      this.stats.errors++;
      this.log.warn({ err: coerceError(err) }, 'liveness sweep failed; it runs again at the next tick');
      return;
    }
    if (result.held !== this.stats.holder)
      this.log.info(
        { holder: result.held },
        result.held ? 'took the farm lease' : 'the farm lease is held elsewhere',
      );
    this.stats.holder = result.held;
    if (!result.held) return;
    this.stats.sweeps++;
    this.stats.hostsMarked += result.marked.length;
    this.stats.commandsFailed += result.failed.length;
    for (const dead of result.marked)
      this.log.warn(
        { host: dead.host, heartbeatAt: dead.heartbeatAt.toISOString() },
        'host is not running: its modems are stale',
      );
    if (result.failed.length)
      this.log.warn(
        { commands: result.failed.map((c) => c.id) },
        'commands of modems on a dead host failed (host_unavailable)',
      );
  }
}
