import { silentLogger, type Logger } from '../log.js';
import { coerceError } from '../util/errors.js';
import { sleep } from '../util/time.js';

export interface JournalPruneSink {
  /** Deletes up to about `maxRows` journal rows older than `seconds`; how many it deleted. */
  pruneTransitionsOlderThan(seconds: number, maxRows: number): Promise<number>;
}

export interface JournalRetentionOptions {
  sink: JournalPruneSink;
  log?: Logger;
  /** Journal rows older than this many days are deleted (what is kept of a modem is a suffix). */
  retentionDays: number;
  /** A prune runs this long after start(), then every `intervalMs`. */
  firstRunMs?: number;
  intervalMs?: number;
  /** Rows per delete (one short transaction each), and the pause between two of them. */
  batchRows?: number;
  pauseMs?: number;
}

export interface JournalRetentionStats {
  runs: number;
  pruned: number;
  failures: number;
  /** Duration of the last run that deleted something (ms). */
  lastRunMs: number;
}

/**
 * Journal retention: `modem_transitions` rows older than `retentionDays` are deleted in small
 * batches (`prune_modem_transitions`), each its own short transaction that locks only the rows it
 * deletes, so appends never wait for it. The modems row keeps each modem's last seq, so a modem's
 * journal continues where it was and a replayed row that was pruned is still a duplicate.
 * A run that fails (database away) is logged and tried again at the next interval.
 */
export class JournalRetention {
  readonly stats: JournalRetentionStats = { runs: 0, pruned: 0, failures: 0, lastRunMs: 0 };
  private readonly log: Logger;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private stopped = true;

  constructor(private readonly options: JournalRetentionOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'journal-retention' });
  }

  start(): void {
    this.stopped = false;
    this.schedule(this.options.firstRunMs ?? 60_000);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** Prune until nothing is older than the retention (or stop() was called); rows deleted. */
  prune(): Promise<number> {
    this.running ??= this.run().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.prune().then(() => this.schedule(this.options.intervalMs ?? 3_600_000));
    }, delayMs);
    this.timer.unref();
  }

  private async run(): Promise<number> {
    // (at most 100 years: a cutoff before the calendar's start would be an error, not "keep all")
    const seconds = Math.min(this.options.retentionDays, 36_500) * 86_400;
    const batch = this.options.batchRows ?? 5_000;
    const started = Date.now();
    let total = 0;
    this.stats.runs++;
    try {
      for (;;) {
        const n = await this.options.sink.pruneTransitionsOlderThan(seconds, batch);
        total += n;
        this.stats.pruned += n;
        if (n === 0 || this.stopped) break;
        await sleep(this.options.pauseMs ?? 20);
      }
    } catch (err) {
      this.stats.failures++;
      this.log.warn({ err: coerceError(err), pruned: total }, 'journal retention run failed; retrying later');
    }
    if (total > 0) {
      this.stats.lastRunMs = Date.now() - started;
      this.log.info(
        { pruned: total, ms: this.stats.lastRunMs, retentionDays: this.options.retentionDays },
        'journal rows past retention pruned',
      );
    }
    return total;
  }
}
