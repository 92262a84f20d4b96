import { silentLogger, type Logger } from '../log.js';
import { isRetryable } from '../store/pgErrors.js';
import type { TrafficSample } from '../store/traffic.js';
import { coerceError, ModemfleetError } from '../util/errors.js';
import { backoffDelay, sleep } from '../util/time.js';
import type { FleetEventMap } from './events.js';
import type { Spool } from './spool.js';

/** Samples as they sit in the spool (dates as ISO text). */
export type SpooledSample = Omit<TrafficSample, 'at' | 'minute'> & { at: string; minute: string };

export interface TrafficSink {
  recordTraffic(samples: readonly TrafficSample[]): Promise<number>;
}

export interface TrafficWriterOptions {
  sink: TrafficSink;
  spool: Spool<SpooledSample>;
  log?: Logger;
  maxBatch?: number;
  retryBaseMs?: number;
  retryCapMs?: number;
  /** A round trip unanswered after this long fails and its samples are spooled (default 10 s). */
  sendTimeoutMs?: number;
  events?: { emit: (name: 'alert', payload: FleetEventMap['alert']) => void };
}

export interface TrafficWriterStats {
  persisted: number;
  spooled: number;
  replayed: number;
  dropped: number;
  mode: 'direct' | 'spooling';
}

const toSpooled = (s: TrafficSample): SpooledSample => ({
  ...s,
  at: s.at.toISOString(),
  minute: s.minute.toISOString(),
});
const fromSpooled = (s: SpooledSample): TrafficSample => ({
  ...s,
  at: new Date(s.at),
  minute: new Date(s.minute),
});

/**
 * Traffic samples on their way to PostgreSQL, in the journal's manner (src/fleet/journalWriter.ts):
 * sent in order in batches; while PostgreSQL is unreachable they go to their own spool
 * (`<stateDir>/traffic-spool`), in the same order, and a replay loop drains it once the database is
 * back, before new samples are sent directly again. Storing is idempotent (a sample no later than
 * what is stored is skipped), so a replay that runs twice, or a send that timed out but committed,
 * counts nothing twice. What a previous process left in the spool is replayed at start.
 */
export class TrafficWriter {
  readonly stats: TrafficWriterStats = { persisted: 0, spooled: 0, replayed: 0, dropped: 0, mode: 'direct' };
  private queue: TrafficSample[] = [];
  private chain: Promise<void> = Promise.resolve();
  private replayTimer: NodeJS.Timeout | undefined;
  private replayAttempt = 0;
  private stopped = false;
  private alerted = false;
  private readonly log: Logger;

  constructor(private readonly options: TrafficWriterOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'traffic-writer' });
  }

  async start(): Promise<void> {
    this.stopped = false;
    try {
      await this.options.spool.open();
    } catch (err) {
      this.alert('spool_unavailable', `${coerceError(err).message}; traffic samples run without a spool`);
      return;
    }
    if (!this.options.spool.isEmpty()) {
      this.stats.mode = 'spooling';
      await this.serialised(() => this.tryReplay());
    }
  }

  /** Queues samples (in order) and sends them. */
  append(samples: readonly TrafficSample[]): Promise<void> {
    if (!samples.length) return this.chain;
    this.queue.push(...samples);
    return this.serialised(() => this.pump());
  }

  /** Resolves once everything appended so far is in PostgreSQL or in the spool. */
  flush(): Promise<void> {
    return this.serialised(() => this.pump());
  }

  /** Flush; what cannot reach the database stays in the spool for the next start. */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
    clearTimeout(this.replayTimer);
    await this.chain;
    await this.options.spool.close();
  }

  /** Resolves once the spool is empty again (tests; a start waits for nothing). */
  async drained(timeoutMs = 30_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.stats.mode !== 'direct' && Date.now() < deadline) await sleep(50);
    await this.chain;
    return this.stats.mode === 'direct';
  }

  private serialised(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch((err: unknown) =>
      this.log.error({ err: coerceError(err) }, 'traffic writer step failed'),
    );
    return this.chain;
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch ?? 1_000);
      if (this.stats.mode === 'spooling') {
        await this.toSpool(batch);
        continue;
      }
      try {
        await this.answered(this.options.sink.recordTraffic(batch));
        this.stats.persisted += batch.length;
      } catch (err) {
        if (!isRetryable(err)) {
          // a sample the database refuses is a bug here: logged loudly, the others keep flowing
          this.stats.dropped += batch.length;
          this.log.error({ err: coerceError(err), samples: batch.length }, 'traffic samples refused');
          continue;
        }
        this.log.warn({ err: coerceError(err) }, 'PostgreSQL unreachable: traffic samples go to the spool');
        this.stats.mode = 'spooling';
        await this.toSpool(batch);
        this.scheduleReplay();
      }
    }
  }

  private answered<T>(pending: Promise<T>): Promise<T> {
    const ms = this.options.sendTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ModemfleetError('query_timeout', `PostgreSQL did not answer a traffic write in ${ms} ms`),
          ),
        ms,
      );
    });
    pending.catch(() => undefined);
    return Promise.race([pending, timeout]).finally(() => clearTimeout(timer));
  }

  private async toSpool(batch: readonly TrafficSample[]): Promise<void> {
    try {
      await this.options.spool.append(batch.map(toSpooled));
      this.stats.spooled += batch.length;
    } catch (err) {
      // lost from the database only: the kernel counters still hold these bytes, and the next
      // sample that gets through carries them (its delta is taken from the last one stored)
      this.stats.dropped += batch.length;
      this.alert('spool_full', coerceError(err).message);
    }
  }

  private scheduleReplay(): void {
    if (this.replayTimer || this.stopped) return;
    const delay = backoffDelay(
      this.replayAttempt,
      this.options.retryBaseMs ?? 250,
      this.options.retryCapMs ?? 5_000,
      0.2,
    );
    this.replayTimer = setTimeout(() => {
      this.replayTimer = undefined;
      void this.serialised(() => this.tryReplay());
    }, delay);
    this.replayTimer.unref();
  }

  private async tryReplay(): Promise<void> {
    try {
      const n = await this.options.spool.replay(async (records) => {
        await this.answered(this.options.sink.recordTraffic(records.map(fromSpooled)));
      });
      this.stats.replayed += n;
      this.stats.persisted += n;
      if (this.options.spool.isEmpty()) {
        this.stats.mode = 'direct';
        this.replayAttempt = 0;
        this.alerted = false;
        if (n > 0) this.log.info({ replayed: n }, 'traffic spool replayed');
        await this.pump();
        return;
      }
    } catch (err) {
      this.log.debug({ err: coerceError(err) }, 'traffic spool replay failed; retrying');
    }
    this.replayAttempt++;
    this.scheduleReplay();
  }

  private alert(kind: 'spool_full' | 'spool_unavailable', message: string): void {
    this.log.error({ kind }, message);
    if (this.alerted) return;
    this.alerted = true;
    this.options.events?.emit('alert', {
      alert: {
        kind: kind === 'spool_full' ? 'traffic_spool_full' : 'traffic_spool_unavailable',
        severity: 'critical',
        message,
      },
    });
  }
}
