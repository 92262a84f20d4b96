import type { Logger } from '../log.js';
import { isRetryable } from '../store/pgErrors.js';
import { coerceError, ModemfleetError } from '../util/errors.js';
import { backoffDelay, rejectAfter } from '../util/time.js';
import type { Spool } from './spool.js';

export interface SpoolingWriterOptions<S> {
  spool: Spool<S>;
  /** Records per round trip (default 1,000). */
  maxBatch?: number | undefined;
  /** Replay attempts while PostgreSQL is away: backoff from/to (default 250 ms to 5 s). */
  retryBaseMs?: number | undefined;
  retryCapMs?: number | undefined;
  /**
   * A round trip unanswered after this long fails (default 10 s) and its records are spooled. A
   * hung query that commits later is harmless: what the writers store is idempotent.
   */
  sendTimeoutMs?: number | undefined;
}

export interface SpoolingStats {
  persisted: number;
  spooled: number;
  replayed: number;
  dropped: number;
  mode: 'direct' | 'spooling';
}

/**
 * Records on their way to PostgreSQL, in order, through a spool while it is away: the journal's
 * transitions (src/fleet/journalWriter.ts) and the traffic samples (src/fleet/trafficWriter.ts).
 * One pump sends what has queued up in batches, one round trip each. When PostgreSQL is
 * unreachable (a retryable error, or no answer within `sendTimeoutMs`) the batch and everything
 * after it go to the spool, in the same order, and a replay loop with backoff drains the spool once
 * the database is back; only then are new records sent directly again. What a previous process left
 * in the spool is replayed at start. Storing must be idempotent (a replay may send a record twice).
 * Every step runs on one promise chain, so batches never overtake each other.
 */
export abstract class SpoolingWriter<R, S, O extends SpoolingWriterOptions<S>> {
  abstract readonly stats: SpoolingStats;
  protected queue: R[] = [];
  protected chain: Promise<void> = Promise.resolve();
  protected stopped = false;
  private replayTimer: NodeJS.Timeout | undefined;
  private replayAttempt = 0;

  /** `what`: the records' name in log lines and errors ("journal", "traffic"). */
  protected constructor(
    protected readonly options: O,
    protected readonly log: Logger,
    private readonly what: string,
  ) {}

  /** One batch to PostgreSQL (through `answered`); throws to have it spooled (when retryable). */
  protected abstract send(batch: readonly R[]): Promise<void>;
  protected abstract toSpooled(record: R): S;
  protected abstract fromSpooled(record: S): R;
  /** A batch PostgreSQL refused for good (not retryable): the others keep flowing. */
  protected abstract refused(batch: readonly R[], err: Error): void;
  /** A batch the spool could not take (full, unwritable): lost from the database. */
  protected abstract unspooled(batch: readonly R[], err: unknown): void;
  /** The spool is empty again after `replayed` records; runs before new records go directly. */
  protected abstract replayed(replayed: number): Promise<void>;
  protected abstract alert(kind: 'spool_unavailable', message: string): void;

  /** Opens the spool and replays what a previous process left in it. */
  async start(): Promise<void> {
    this.stopped = false;
    try {
      await this.options.spool.open();
    } catch (err) {
      // records go to PostgreSQL as long as it answers; the spool is tried again at each use
      this.alert(
        'spool_unavailable',
        `${coerceError(err).message}; the ${this.what} writer runs without a spool`,
      );
      return;
    }
    if (!this.options.spool.isEmpty()) {
      this.stats.mode = 'spooling';
      await this.serialised(() => this.tryReplay());
    }
  }

  /** Resolves when everything appended so far is in PostgreSQL or in the spool. */
  async flush(): Promise<void> {
    await this.serialised(() => this.pump());
  }

  /** Flush; what cannot reach the database stays in the spool for the next start. */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
    clearTimeout(this.replayTimer);
    await this.chain;
    await this.options.spool.close();
  }

  protected serialised(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch((err: unknown) =>
      this.log.error({ err: coerceError(err) }, `${this.what} writer step failed`),
    );
    return this.chain;
  }

  protected async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch ?? 1_000);
      if (this.stats.mode === 'spooling') {
        await this.toSpool(batch);
        continue;
      }
      try {
        await this.send(batch);
        this.stats.persisted += batch.length;
      } catch (err) {
        if (!isRetryable(err)) {
          this.refused(batch, coerceError(err));
          continue;
        }
        this.log.warn(
          { err: coerceError(err) },
          `PostgreSQL unreachable: ${this.what} records go to the spool`,
        );
        this.stats.mode = 'spooling';
        await this.toSpool(batch);
        this.scheduleReplay();
      }
    }
  }

  /** The sink's answer, or a retryable failure once `sendTimeoutMs` passed without one. */
  protected answered<T>(pending: Promise<T>): Promise<T> {
    const ms = this.options.sendTimeoutMs ?? 10_000;
    return rejectAfter(
      pending,
      ms,
      () =>
        new ModemfleetError('query_timeout', `PostgreSQL did not answer a ${this.what} write in ${ms} ms`),
    );
  }

  private async toSpool(batch: readonly R[]): Promise<void> {
    try {
      await this.options.spool.append(batch.map((r) => this.toSpooled(r)));
      this.stats.spooled += batch.length;
    } catch (err) {
      this.stats.dropped += batch.length;
      this.unspooled(batch, err);
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

  /** Drains the spool; back to direct mode once it is empty. */
  private async tryReplay(): Promise<void> {
    try {
      const n = await this.options.spool.replay(async (records) => {
        await this.send(records.map((r) => this.fromSpooled(r)));
      });
      this.stats.replayed += n;
      this.stats.persisted += n;
      if (this.options.spool.isEmpty()) {
        this.stats.mode = 'direct';
        this.replayAttempt = 0;
        await this.replayed(n);
        await this.pump();
        return;
      }
    } catch (err) {
      this.log.debug({ err: coerceError(err) }, `${this.what} spool replay failed; retrying`);
    }
    this.replayAttempt++;
    this.scheduleReplay();
  }
}
