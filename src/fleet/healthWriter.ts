import { silentLogger, type Logger } from '../log.js';
import type { HealthSample } from '../store/types.js';
import { coerceError } from '../util/errors.js';

export interface HealthSink {
  recordHealth(samples: readonly HealthSample[]): Promise<void>;
  pruneHealthOlderThan(seconds: number): Promise<number>;
}

export interface HealthWriterOptions {
  sink: HealthSink;
  log?: Logger;
  /** Samples are written together every this many ms. */
  flushIntervalMs?: number;
  /** Samples kept in memory while the database is away; the oldest are dropped beyond it. */
  maxBuffered?: number;
  /** Retention: samples older than this are pruned once per `pruneIntervalMs`. */
  retentionSeconds: number;
  pruneIntervalMs?: number;
}

/**
 * Health samples in batches: one multi-row insert per interval. Samples are a time series, not a
 * journal: while the database is away they are buffered up to a bound and the oldest dropped.
 */
export class HealthWriter {
  readonly stats = { written: 0, dropped: 0, pruned: 0 };
  private buffer: HealthSample[] = [];
  private flushTimer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly log: Logger;

  constructor(private readonly options: HealthWriterOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'health' });
  }

  start(): void {
    this.flushTimer = setInterval(() => void this.flush(), this.options.flushIntervalMs ?? 1_000);
    this.flushTimer.unref();
    this.pruneTimer = setInterval(() => void this.prune(), this.options.pruneIntervalMs ?? 3_600_000);
    this.pruneTimer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.flushTimer);
    clearInterval(this.pruneTimer);
    await this.flush();
  }

  add(sample: HealthSample): void {
    this.buffer.push({ ...sample, at: sample.at ?? new Date() });
    const max = this.options.maxBuffered ?? 100_000;
    if (this.buffer.length > max) {
      const over = this.buffer.length - max;
      this.buffer.splice(0, over);
      this.stats.dropped += over;
    }
  }

  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.buffer.length === 0) return;
    const batch = this.buffer;
    this.buffer = [];
    this.flushing = this.options.sink
      .recordHealth(batch)
      .then(() => {
        this.stats.written += batch.length;
      })
      .catch((err: unknown) => {
        this.buffer = [...batch, ...this.buffer];
        this.log.debug({ err: coerceError(err) }, 'health samples not written yet');
      })
      .finally(() => {
        this.flushing = undefined;
      });
    await this.flushing;
  }

  async prune(): Promise<number> {
    try {
      const n = await this.options.sink.pruneHealthOlderThan(this.options.retentionSeconds);
      this.stats.pruned += n;
      return n;
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'health retention job failed');
      return 0;
    }
  }
}
