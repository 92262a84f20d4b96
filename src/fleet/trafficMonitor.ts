import { join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { TrafficAccounting } from '../net/trafficAccounting.js';
import type { PartReading, TrafficPart } from '../net/trafficTable.js';
import type { Policy } from '../policy.js';
import type { Listener } from '../store/listener.js';
import type { ClosedReason } from '../store/quotas.js';
import type { Store } from '../store/store.js';
import type { TrafficSample } from '../store/traffic.js';
import { coerceError } from '../util/errors.js';
import type { FleetEvents } from './events.js';
import { Spool, type FsyncPolicy } from './spool.js';
import { l3Ratio, readingMinute } from './trafficMath.js';
import { QuotaEnforcer } from './quotaEnforcer.js';
import { TrafficWriter, type SpooledSample } from './trafficWriter.js';

export type TrafficStore = Pick<
  Store,
  'hostId' | 'recordTraffic' | 'pruneTraffic' | 'hostQuotas' | 'markClosed' | 'raiseAlertLevel' | 'listen'
>;

export interface TrafficMonitorOptions {
  store: TrafficStore;
  /** `<stateDir>/traffic-spool` holds samples while PostgreSQL is away. */
  stateDir: string;
  spool?: { maxBytes?: number; fsync?: FsyncPolicy } | undefined;
  /** The proxies' network namespace (the table is there). */
  netns?: string | undefined;
  /** The supervisor's own uid: its egress probes to the ports are not counted. */
  probeUid: number | null;
  /** The table goes with the supervisor (the demo); otherwise it outlives it (counters, closed ports). */
  removeOnStop?: boolean | undefined;
  policy: Pick<
    Policy,
    | 'trafficReadMs'
    | 'trafficSampleMs'
    | 'trafficQuotaPollMs'
    | 'trafficMinuteRetentionDays'
    | 'trafficHourRetentionDays'
    | 'trafficDayRetentionDays'
    | 'trafficPruneIntervalMs'
    | 'listenHeartbeatIntervalMs'
    | 'listenHeartbeatTimeoutMs'
  >;
  events: Pick<FleetEvents, 'emit'>;
  /** A port closed (reason) or reopened (null): the Modem serving it journals it. */
  onPortChange?: ((imei: string, reason: ClosedReason | null, detail: string) => void) | undefined;
  log?: Logger | undefined;
}

/** What a data plane asks before its proxy serves: the modem's counters and quota are in place. */
export interface TrafficGate {
  admit(part: TrafficPart): Promise<void>;
}

/** Cumulative payload bytes per modem on this host (the kernel's counters): metrics. */
export interface TrafficFigures {
  imei: string;
  download: number;
  upload: number;
}

/**
 * Traffic accounting and quotas on one host. Reads the kernel's counters
 * (src/net/trafficAccounting.ts) every `trafficReadMs`; every `trafficSampleMs` (a minute) each
 * modem whose counters moved gets a sample, written by a TrafficWriter (spooled while PostgreSQL is
 * away). Every read also enforces the quotas (src/fleet/trafficMath.ts `enforcement`): calibrates
 * each kernel limit, reopens a port the kernel stopped a little early, closes a spent or expired
 * one, raises the 80 % and 100 % alerts once per period, and records why a port is closed (the row,
 * and the journal through the Modem). Quotas are read at start, after every NOTIFY on
 * `modem_config_change` (a quota set, raised, reset or cleared anywhere in the farm), and every
 * `trafficQuotaPollMs`; a timer wakes it at the next expiry or period end.
 */
export class TrafficMonitor {
  readonly accounting: TrafficAccounting;
  readonly writer: TrafficWriter;
  readonly quotas: QuotaEnforcer;
  private latest = new Map<string, PartReading>();
  /** The last sample per modem made by this process (the minute of the next, and skipping idle ones). */
  private sampled = new Map<string, { at: Date; token: string; download: number; upload: number }>();
  /** L3/payload ratio per modem, from the last two reads. */
  private ratios = new Map<string, number>();
  private lastRound = -1;
  private timer: NodeJS.Timeout | undefined;
  private wakeTimer: NodeJS.Timeout | undefined;
  private pruneTimer: NodeJS.Timeout | undefined;
  private quotaPoll: NodeJS.Timeout | undefined;
  private listener: Listener | undefined;
  private ticking: Promise<void> | undefined;
  private again = false;
  private stopped = true;
  private readonly log: Logger;

  constructor(private readonly options: TrafficMonitorOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'traffic' });
    this.accounting = new TrafficAccounting({
      netns: options.netns,
      probeUid: options.probeUid,
      log: this.log,
    });
    this.accounting.onReplaced = (reading) => void this.writer.append([this.sample(reading, new Date())]);
    this.quotas = new QuotaEnforcer({
      store: options.store,
      accounting: this.accounting,
      events: options.events,
      onPortChange: options.onPortChange,
      log: this.log,
    });
    this.writer = new TrafficWriter({
      sink: options.store,
      spool: new Spool<SpooledSample>({
        dir: join(options.stateDir, 'traffic-spool'),
        maxBytes: options.spool?.maxBytes ?? 64 * 1024 * 1024,
        fsync: options.spool?.fsync ?? 'always',
      }),
      events: options.events,
      log: this.log,
    });
  }

  /** The gate a data plane passes before its proxy serves (fail closed: a refusal stops it). */
  readonly gate: TrafficGate = {
    admit: (part) => this.accounting.admit(part, this.quotas.initialFor(part.imei)),
  };

  /** Cumulative payload bytes per modem, as of the last read. */
  figures(): TrafficFigures[] {
    return [...this.latest.values()].map((r) => ({ imei: r.imei, download: r.download, upload: r.upload }));
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.writer.start();
    await this.accounting.start();
    await this.quotas
      .reload()
      .catch((err: unknown) =>
        this.log.warn({ err: coerceError(err) }, 'quotas not read yet; retried at the next poll'),
      );
    try {
      this.listener = await this.options.store.listen(['modem_config_change'], () => this.reloadSoon(), {
        onCatchUp: () => this.quotas.reload(),
        heartbeatIntervalMs: this.options.policy.listenHeartbeatIntervalMs,
        heartbeatTimeoutMs: this.options.policy.listenHeartbeatTimeoutMs,
      });
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'quota changes not listened to; polled instead');
    }
    this.quotaPoll = setInterval(() => this.reloadSoon(), this.options.policy.trafficQuotaPollMs);
    this.quotaPoll.unref();
    this.pruneTimer = setInterval(() => void this.prune(), this.options.policy.trafficPruneIntervalMs);
    this.pruneTimer.unref();
    await this.tick();
    this.arm();
  }

  /**
   * The last read and a sample of every modem that moved, then the writer flushes (or spools).
   * `handover`: the proxies keep serving for the next run, so the table stays even where it would
   * go with us (`removeOnStop`): the next run's first read carries on from these counters.
   */
  async stop(options: { handover?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearTimeout(this.timer);
    clearTimeout(this.wakeTimer);
    clearInterval(this.quotaPoll);
    clearInterval(this.pruneTimer);
    await this.listener?.stop().catch(() => undefined);
    await this.ticking;
    await this.quotas.idle();
    try {
      const state = await this.accounting.read();
      await this.writer.append(
        this.samplesOf(
          [...state.parts.values()].map((p) => p.reading),
          new Date(),
        ),
      );
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'last traffic read failed; the next start counts it');
    }
    await this.writer.stop();
    await this.accounting.stop();
    if (this.options.removeOnStop && options.handover !== true) await this.accounting.remove();
  }

  /** Read now (tests; a quota changed here). */
  poke(): Promise<void> {
    return this.tick();
  }

  private arm(): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(
      () => void this.tick().finally(() => this.arm()),
      this.options.policy.trafficReadMs,
    );
    this.timer.unref();
  }

  private reloadSoon(): void {
    if (this.stopped) return;
    void this.quotas
      .reload()
      .then(() => this.tick())
      .catch((err: unknown) =>
        this.log.warn({ err: coerceError(err) }, 'quotas not read; retried at the next poll'),
      );
  }

  /** One read: samples (once a minute), calibration, closing and reopening, alerts. Coalesced. */
  private tick(): Promise<void> {
    if (this.ticking) {
      this.again = true;
      return this.ticking;
    }
    this.ticking = (async () => {
      do {
        this.again = false;
        try {
          await this.readOnce();
        } catch (err) {
          this.log.warn({ err: coerceError(err) }, 'traffic read failed; retried at the next read');
        }
      } while (this.again && !this.stopped);
    })().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async readOnce(): Promise<void> {
    const state = await this.accounting.read();
    const now = new Date();
    const readings = [...state.parts.values()].map((p) => p.reading);
    for (const r of readings) {
      const before = this.latest.get(r.imei);
      if (before && before.token === r.token) {
        const ratio = l3Ratio(
          r.l3Download + r.l3Upload - before.l3Download - before.l3Upload,
          r.download + r.upload - before.download - before.upload,
          0,
        );
        if (ratio > 0) this.ratios.set(r.imei, ratio);
      }
      this.latest.set(r.imei, r);
    }
    for (const imei of [...this.latest.keys()])
      if (!readings.some((r) => r.imei === imei)) this.latest.delete(imei);
    const round = Math.floor(now.getTime() / this.options.policy.trafficSampleMs);
    if (round !== this.lastRound) {
      this.lastRound = round;
      void this.writer.append(this.samplesOf(readings, now));
    }
    this.wakeAt(await this.quotas.enforce(readings, now, this.ratios));
  }

  private sample(r: PartReading, at: Date): TrafficSample {
    const prev = this.sampled.get(r.imei);
    this.sampled.set(r.imei, { at, token: r.token, download: r.download, upload: r.upload });
    return {
      imei: r.imei,
      host: this.options.store.hostId,
      at,
      minute: readingMinute(prev?.at, at),
      instance: r.token,
      download: r.download,
      upload: r.upload,
    };
  }

  /** A sample of each modem whose counters moved since its last one (every one, the first time). */
  private samplesOf(readings: readonly PartReading[], at: Date): TrafficSample[] {
    return readings
      .filter((r) => {
        const prev = this.sampled.get(r.imei);
        return !prev || prev.token !== r.token || prev.download !== r.download || prev.upload !== r.upload;
      })
      .map((r) => this.sample(r, at));
  }

  /** A read at the next expiry or period end (not only at the next interval). */
  private wakeAt(at: number | undefined): void {
    clearTimeout(this.wakeTimer);
    if (at === undefined || this.stopped) return;
    const delay = Math.max(0, at - Date.now()) + 20;
    if (delay > this.options.policy.trafficReadMs) return;
    this.wakeTimer = setTimeout(() => void this.tick(), delay);
    this.wakeTimer.unref();
  }

  private async prune(): Promise<void> {
    const p = this.options.policy;
    try {
      let total = 0;
      for (let n = -1; n !== 0 && !this.stopped && total < 1_000_000; total += n)
        n = await this.options.store.pruneTraffic({
          minuteDays: p.trafficMinuteRetentionDays,
          hourDays: p.trafficHourRetentionDays,
          dayDays: p.trafficDayRetentionDays,
        });
      if (total > 0) this.log.info({ pruned: total }, 'traffic rows past retention pruned');
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'traffic retention run failed; retried later');
    }
  }
}
