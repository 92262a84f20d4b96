import { silentLogger, type Logger } from '../log.js';
import { checkTransition } from '../store/journal.js';
import { MODEM_STATES, type AppendResult, type TransitionRecord } from '../store/types.js';
import { coerceError, ModemfleetError } from '../util/errors.js';
import { sleep } from '../util/time.js';
import type { FleetEventMap } from './events.js';
import { SpoolingWriter, type SpoolingStats, type SpoolingWriterOptions } from './spoolingWriter.js';

/** Transitions as they sit in the spool (dates as ISO text). */
export type SpooledTransition = Omit<TransitionRecord, 'at'> & { at: string };

export interface JournalSink {
  appendTransitions(batch: readonly TransitionRecord[]): Promise<AppendResult[]>;
}

/** Appends and replays are idempotent on (imei, seq): a hung query that commits later is harmless. */
export interface JournalWriterOptions extends SpoolingWriterOptions<SpooledTransition> {
  sink: JournalSink;
  log?: Logger;
  /** Where its alerts go (critical, once per episode: spool full or unwritable, journal gap). */
  events?: { emit: (name: 'alert', payload: FleetEventMap['alert']) => void };
}

export interface JournalStats extends SpoolingStats {
  batches: number;
}

/**
 * Group commit for the journal (the spool and the replay: src/fleet/spoolingWriter.ts). Actors
 * append synchronously; one pump sends what has queued up in batches (one round trip each), in
 * order. Appends are idempotent on (imei, seq), so a replay that happens twice stores once. Beyond
 * the spool: an invalid record is stored as a placeholder naming its problem, and records the spool
 * could not take are written back as `journal.lost` placeholders, so no modem's journal keeps a gap.
 */
export class JournalWriter extends SpoolingWriter<TransitionRecord, SpooledTransition, JournalWriterOptions> {
  readonly stats: JournalStats = {
    persisted: 0,
    spooled: 0,
    replayed: 0,
    dropped: 0,
    batches: 0,
    mode: 'direct',
  };
  private pumping = false;
  private alerted = new Set<string>();
  /** Seqs dropped while the spool could not take them, per modem: written back as placeholders. */
  private readonly lost = new Map<string, { first: number; last: number; state: string }>();

  // without a spool (it could not be opened), records go to PostgreSQL as long as it answers;
  // during an outage they are dropped and marked (journal.lost)
  constructor(options: JournalWriterOptions) {
    super(options, (options.log ?? silentLogger).child({ component: 'journal' }), 'journal');
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

  protected toSpooled(r: TransitionRecord): SpooledTransition {
    return { ...r, at: r.at.toISOString() };
  }

  protected fromSpooled(r: SpooledTransition): TransitionRecord {
    return { ...r, at: new Date(r.at) };
  }

  protected refused(batch: readonly TransitionRecord[], err: Error): void {
    // a malformed record is a bug in an actor: log it loudly, keep the others flowing
    this.log.error({ err, rows: batch.length }, 'journal batch refused');
  }

  protected async send(batch: readonly TransitionRecord[]): Promise<void> {
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

  /** Marks the batch's seqs lost, per modem (closed by placeholders once PostgreSQL answers). */
  protected unspooled(batch: readonly TransitionRecord[], err: unknown): void {
    const code = err instanceof ModemfleetError ? err.code : 'spool_unavailable';
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

  protected async replayed(n: number): Promise<void> {
    this.alerted.clear();
    if (n > 0) this.log.info({ replayed: n }, 'spool replayed; journal writes go to PostgreSQL again');
    await this.closeLost();
  }

  protected alert(kind: 'spool_full' | 'spool_unavailable' | 'journal_gap', message: string): void {
    this.log.error({ kind }, message);
    if (this.alerted.has(kind)) return;
    this.alerted.add(kind);
    this.options.events?.emit('alert', { alert: { kind, severity: 'critical', message } });
  }
}
