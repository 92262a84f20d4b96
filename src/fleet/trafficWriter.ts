import { silentLogger, type Logger } from '../log.js';
import type { TrafficSample } from '../store/traffic.js';
import { coerceError } from '../util/errors.js';
import { sleep } from '../util/time.js';
import type { FleetEventMap } from './events.js';
import { SpoolingWriter, type SpoolingStats, type SpoolingWriterOptions } from './spoolingWriter.js';

/** Samples as they sit in the spool (dates as ISO text). */
export type SpooledSample = Omit<TrafficSample, 'at' | 'minute'> & { at: string; minute: string };

export interface TrafficSink {
  recordTraffic(samples: readonly TrafficSample[]): Promise<number>;
}

export interface TrafficWriterOptions extends SpoolingWriterOptions<SpooledSample> {
  sink: TrafficSink;
  log?: Logger;
  events?: { emit: (name: 'alert', payload: FleetEventMap['alert']) => void };
}

export type TrafficWriterStats = SpoolingStats;

/**
 * Traffic samples on their way to PostgreSQL, as the journal's transitions go
 * (src/fleet/spoolingWriter.ts): in order, in batches, through their own spool
 * (`<stateDir>/traffic-spool`) while the database is away. Storing is idempotent (a sample no later
 * than what is stored is skipped), so a replay that runs twice, or a send that timed out but
 * committed, counts nothing twice.
 */
export class TrafficWriter extends SpoolingWriter<TrafficSample, SpooledSample, TrafficWriterOptions> {
  readonly stats: TrafficWriterStats = { persisted: 0, spooled: 0, replayed: 0, dropped: 0, mode: 'direct' };
  private alerted = false;

  constructor(options: TrafficWriterOptions) {
    super(options, (options.log ?? silentLogger).child({ component: 'traffic-writer' }), 'traffic');
  }

  /** Queues samples (in order) and sends them. */
  append(samples: readonly TrafficSample[]): Promise<void> {
    if (!samples.length) return this.chain;
    this.queue.push(...samples);
    return this.serialised(() => this.pump());
  }

  /** Resolves once the spool is empty again (tests; a start waits for nothing). */
  async drained(timeoutMs = 30_000): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.stats.mode !== 'direct' && Date.now() < deadline) await sleep(50);
    await this.chain;
    return this.stats.mode === 'direct';
  }

  protected async send(batch: readonly TrafficSample[]): Promise<void> {
    await this.answered(this.options.sink.recordTraffic(batch));
  }

  protected toSpooled(s: TrafficSample): SpooledSample {
    return { ...s, at: s.at.toISOString(), minute: s.minute.toISOString() };
  }

  protected fromSpooled(s: SpooledSample): TrafficSample {
    return { ...s, at: new Date(s.at), minute: new Date(s.minute) };
  }

  protected refused(batch: readonly TrafficSample[], err: Error): void {
    // a sample the database refuses is a bug here: logged loudly, the others keep flowing
    this.stats.dropped += batch.length;
    this.log.error({ err, samples: batch.length }, 'traffic samples refused');
  }

  protected unspooled(_batch: readonly TrafficSample[], err: unknown): void {
    // lost from the database only: the kernel counters still hold these bytes, and the next
    // sample that gets through carries them (its delta is taken from the last one stored)
    this.alert('spool_full', coerceError(err).message);
  }

  protected replayed(n: number): Promise<void> {
    this.alerted = false;
    if (n > 0) this.log.info({ replayed: n }, 'traffic spool replayed');
    return Promise.resolve();
  }

  protected alert(kind: 'spool_full' | 'spool_unavailable', message: string): void {
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
