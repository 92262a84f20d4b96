import { silentLogger, type Logger } from '../log.js';
import { isRetryable } from '../store/pgErrors.js';
import { checkTransition } from '../store/journal.js';
import { MODEM_STATES, type AppendResult, type TransitionRecord } from '../store/types.js';
import { coerceError, ModemfleetError } from '../util/errors.js';
import { backoffDelay, sleep } from '../util/time.js';
import type { FleetEventMap } from './events.js';
import type { Spool } from './spool.js';

/** Transitions as they sit in the spool (dates as ISO text). */
export type SpooledTransition = Omit<TransitionRecord, 'at'> & { at: string };

export interface JournalSink {
  appendTransitions(batch: readonly TransitionRecord[]): Promise<AppendResult[]>;
}

export interface JournalWriterOptions {
  sink: JournalSink;
  spool: Spool<SpooledTransition>;
  log?: Logger;
  /** Rows per round trip. */
  maxBatch?: number;
  /** Replay attempts while PostgreSQL is away: backoff from/to. */
  retryBaseMs?: number;
  retryCapMs?: number;
  /**
   * A round trip unanswered after this long fails (default 10 s): the batch is spooled. A hung
   * query that commits later is harmless, since appends and replays are idempotent on (imei, seq).
   */
  sendTimeoutMs?: number;
  /** Where its alerts go (critical, once per episode: spool full or unwritable, journal gap). */
  events?: { emit: (name: 'alert', payload: FleetEventMap['alert']) => void };
}

export interface JournalStats {
  persisted: number;
  spooled: number;
  replayed: number;
  dropped: number;
  batches: number;
  mode: 'direct' | 'spooling';
}

const toSpooled = (r: TransitionRecord): SpooledTransition => ({ ...r, at: r.at.toISOString() });
const fromSpooled = (r: SpooledTransition): TransitionRecord => ({ ...r, at: new Date(r.at) });

/**
 * Group commit for the journal. Actors append synchronously; one pump sends what has queued up in
 * batches (one round trip each), in order. When PostgreSQL is unreachable the batch and everything
 * after it go to the spool, in the same order, and a replay loop drains the spool once the database
 * is back; only then are new records sent directly again. Appends are idempotent on (imei, seq),
 * so a replay that happens twice stores once.
 */
export class JournalWriter {
  readonly stats: JournalStats = {
    persisted: 0,
    spooled: 0,
    replayed: 0,
    dropped: 0,
    batches: 0,
    mode: 'direct',
  };
  private queue: TransitionRecord[] = [];
  private chain: Promise<void> = Promise.resolve();
  private pumping = false;
  private replayTimer: NodeJS.Timeout | undefined;
  private replayAttempt = 0;
  private stopped = false;
  private alerted = new Set<string>();
  /** Seqs dropped while the spool could not take them, per modem: written back as placeholders. */
  private readonly lost = new Map<string, { first: number; last: number; state: string }>();
  private readonly log: Logger;

  constructor(private readonly options: JournalWriterOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'journal' });
  }

  /** Replays what a previous process left in the spool. */
  async start(): Promise<void> {
    try {
      await this.options.spool.open();
    } catch (err) {
      // The farm runs without a spool: records go to PostgreSQL as long as it answers; during an
      // outage they are dropped and marked (journal.lost). Opening is tried again at each use.
      this.alert('spool_unavailable', `${coerceError(err).message}; the journal runs without a spool`);
      return;
    }
    if (!this.options.spool.isEmpty()) {
      this.stats.mode = 'spooling';
      await this.serialised(() => this.tryReplay());
    }
  }

  /**
   * Resolves once everything spooled has reached PostgreSQL (replays keep retrying with backoff).
   * The supervisor waits for this on start: the journal positions it reads from the database are
   * only current when no earlier transition still sits in the spool.
   */
  async drained(): Promise<void> {
    let waited = 0;
    while (this.stats.mode !== 'direct' && !this.stopped) {
      await sleep(100);
      waited += 100;
      if (waited % 10_000 === 0) this.log.warn({ waitedMs: waited }, 'still replaying the spool');
    }
  }

  /** Records waiting to be sent, and the age of the oldest (ms): the journal's lag. */
  get lag(): { queued: number; oldestMs: number; spoolBytes: number } {
    const oldest = this.queue[0];
    return {
      queued: this.queue.length,
      oldestMs: oldest ? Math.max(0, Date.now() - oldest.at.getTime()) : 0,
      spoolBytes: this.options.spool.size,
    };
  }

  append(record: TransitionRecord): void {
    record = this.valid(record) ?? record;
    this.queue.push(record);
    if (!this.pumping) {
      this.pumping = true;
      queueMicrotask(() => {
        this.pumping = false;
        void this.serialised(() => this.pump());
      });
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

  /**
   * A record that cannot be stored would leave a hole in its modem's journal forever: it is
   * replaced by a `journal.invalid` placeholder with the same seq, naming the problem.
   */
  private valid(record: TransitionRecord): TransitionRecord | undefined {
    try {
      checkTransition(record);
      return undefined;
    } catch (err) {
      const message = coerceError(err).message;
      this.log.error({ imei: record.imei, seq: record.seq, problem: message }, 'invalid transition replaced');
      const top = record.to.split('.')[0] ?? '';
      return {
        imei: record.imei,
        seq: record.seq,
        from: null,
        to: (MODEM_STATES as readonly string[]).includes(top) ? top : 'error',
        event: 'journal.invalid',
        at: new Date(),
        detail: { problem: message.slice(0, 300) },
      };
    }
  }

  private serialised(fn: () => Promise<void>): Promise<void> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch((err: unknown) =>
      this.log.error({ err: coerceError(err) }, 'journal step failed'),
    );
    return this.chain;
  }

  private async pump(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch ?? 1000);
      if (this.stats.mode === 'spooling') {
        await this.toSpool(batch);
        continue;
      }
      try {
        await this.send(batch);
        this.stats.persisted += batch.length;
      } catch (err) {
        if (!isRetryable(err)) {
          // a malformed record is a bug in an actor: log it loudly, keep the others flowing
          this.log.error({ err: coerceError(err), rows: batch.length }, 'journal batch refused');
          continue;
        }
        this.log.warn({ err: coerceError(err) }, 'PostgreSQL unreachable: journal goes to the spool');
        this.stats.mode = 'spooling';
        await this.toSpool(batch);
        this.scheduleReplay();
      }
    }
  }

  private async send(batch: readonly TransitionRecord[]): Promise<void> {
    this.stats.batches++;
    const results = await this.answered(this.options.sink.appendTransitions(batch));
    const gaps = results.filter((r) => r.gapAt !== null);
    if (gaps.length === 0) return;
    const placeholders: TransitionRecord[] = [];
    for (const gap of gaps) {
      const lost = this.lost.get(gap.imei);
      if (lost && gap.gapAt !== null && gap.gapAt >= lost.first && gap.gapAt <= lost.last) {
        placeholders.push(...this.placeholders(gap.imei, lost, gap.gapAt));
        this.lost.delete(gap.imei);
      } else {
        this.alert(
          'journal_gap',
          `journal of ${gap.imei} waits for seq ${gap.gapAt}; later transitions are not stored`,
        );
      }
    }
    if (placeholders.length > 0) {
      // the placeholders close the gaps; the rows behind them go in again (duplicates are skipped)
      await this.answered(
        this.options.sink.appendTransitions([
          ...placeholders,
          ...batch.filter((r) => gaps.some((g) => g.imei === r.imei)),
        ]),
      );
    }
  }

  /** The sink's answer, or a retryable failure once `sendTimeoutMs` passed without one. */
  private answered<T>(pending: Promise<T>): Promise<T> {
    const ms = this.options.sendTimeoutMs ?? 10_000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ModemfleetError('query_timeout', `PostgreSQL did not answer a journal write in ${ms} ms`),
          ),
        ms,
      );
    });
    pending.catch(() => undefined); // a late failure of an abandoned round trip is not unhandled
    return Promise.race([pending, timeout]).finally(() => clearTimeout(timer));
  }

  /** `journal.lost` rows standing for the seqs `lost` says were dropped. */
  private placeholders(
    imei: string,
    lost: { first: number; last: number; state: string },
    from = lost.first,
  ) {
    const rows: TransitionRecord[] = [];
    for (let seq = from; seq <= lost.last; seq++)
      rows.push({
        imei,
        seq,
        from: lost.state,
        to: lost.state,
        event: 'journal.lost',
        at: new Date(),
        detail: { reason: 'spool_full' },
      });
    return rows;
  }

  /**
   * Closes every gap left by dropped records as soon as PostgreSQL takes writes again, without
   * waiting for the modem's next transition: the journal records lifecycle only, so an idle modem
   * may not journal again for hours, and its row must not show a state it has left meanwhile.
   */
  private async closeLost(): Promise<void> {
    if (this.lost.size === 0) return;
    const lost = [...this.lost];
    this.lost.clear();
    try {
      const results = await this.answered(
        this.options.sink.appendTransitions(lost.flatMap(([imei, l]) => this.placeholders(imei, l))),
      );
      // a journal that waits for an earlier seq: its next record's gap path closes it
      for (const r of results)
        if (r.gapAt !== null) {
          const l = lost.find(([imei]) => imei === r.imei)?.[1];
          if (l && !this.lost.has(r.imei)) this.lost.set(r.imei, l);
        }
    } catch (err) {
      // the database went away again: the next record of the modem (or the next replay) closes them
      for (const [imei, l] of lost) if (!this.lost.has(imei)) this.lost.set(imei, l);
      this.log.warn({ err: coerceError(err) }, 'journal placeholders not written; retried later');
    }
  }

  private async toSpool(batch: TransitionRecord[]): Promise<void> {
    try {
      await this.options.spool.append(batch.map(toSpooled));
      this.stats.spooled += batch.length;
    } catch (err) {
      const code = err instanceof ModemfleetError ? err.code : 'spool_unavailable';
      this.stats.dropped += batch.length;
      for (const r of batch) {
        const lost = this.lost.get(r.imei);
        this.lost.set(r.imei, {
          first: Math.min(lost?.first ?? r.seq, r.seq),
          last: Math.max(lost?.last ?? r.seq, r.seq),
          state: r.to,
        });
      }
      this.alert(code === 'spool_full' ? 'spool_full' : 'spool_unavailable', coerceError(err).message);
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

  /** Drain the spool; back to direct mode once it is empty. */
  private async tryReplay(): Promise<void> {
    try {
      const n = await this.options.spool.replay(async (records) => {
        await this.send(records.map(fromSpooled));
      });
      this.stats.replayed += n;
      this.stats.persisted += n;
      if (this.options.spool.isEmpty()) {
        this.stats.mode = 'direct';
        this.replayAttempt = 0;
        this.alerted.clear();
        if (n > 0) this.log.info({ replayed: n }, 'spool replayed; journal writes go to PostgreSQL again');
        await this.closeLost();
        await this.pump();
        return;
      }
    } catch (err) {
      this.log.debug({ err: coerceError(err) }, 'spool replay failed; retrying');
    }
    this.replayAttempt++;
    this.scheduleReplay();
  }

  private alert(kind: 'spool_full' | 'spool_unavailable' | 'journal_gap', message: string): void {
    this.log.error({ kind }, message);
    if (this.alerted.has(kind)) return;
    this.alerted.add(kind);
    this.options.events?.emit('alert', { alert: { kind, severity: 'critical', message } });
  }
}
