import { silentLogger, type Logger } from '../log.js';
import type { AlertInput } from '../store/types.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay } from '../util/time.js';

/**
 * Alerts on their way to PostgreSQL. The alerts that matter most (spool full, journal gap) are
 * raised while the database is away, so an alert that cannot be stored waits here, in order, and
 * is retried with backoff until it is (keeping the time it was raised). Bounded: past `max`
 * waiting alerts the oldest are dropped and counted.
 */
export class AlertQueue {
  private readonly pending: AlertInput[] = [];
  private flushing: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private stopped = false;
  dropped = 0;
  private readonly log: Logger;

  constructor(
    private readonly raise: (alert: AlertInput) => Promise<unknown>,
    private readonly options: { max?: number; retryBaseMs?: number; retryCapMs?: number; log?: Logger } = {},
  ) {
    this.log = (options.log ?? silentLogger).child({ component: 'alerts' });
  }

  get waiting(): number {
    return this.pending.length;
  }

  push(alert: AlertInput): void {
    this.pending.push({ ...alert, raisedAt: alert.raisedAt ?? new Date() });
    if (this.pending.length > (this.options.max ?? 500)) {
      this.pending.shift();
      this.dropped++;
    }
    void this.flush();
  }

  /** Store what waits, in order; on failure retry later (not after stop). */
  flush(): Promise<void> {
    this.flushing ??= (async () => {
      try {
        for (let next = this.pending[0]; next; next = this.pending[0]) {
          await this.raise(next);
          this.pending.shift();
          this.attempt = 0;
        }
      } catch (err) {
        this.log.warn(
          { err: coerceError(err), waiting: this.pending.length },
          'alert not stored yet; retrying',
        );
        this.retry();
      } finally {
        this.flushing = undefined;
      }
    })();
    return this.flushing;
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    const delay = backoffDelay(
      this.attempt++,
      this.options.retryBaseMs ?? 250,
      this.options.retryCapMs ?? 5_000,
      0.2,
    );
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, delay);
    this.timer.unref();
  }

  /** One last attempt; what still cannot be stored is logged (it is in the log already). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.flushing;
    await this.flush();
    if (this.pending.length)
      this.log.error({ alerts: this.pending.map((a) => a.kind) }, 'alerts not stored at shutdown');
  }
}
