import type { Logger } from '../log.js';
import type { TrafficAccounting } from '../net/trafficAccounting.js';
import { NO_LIMIT, type PartChange, type PartReading } from '../net/trafficTable.js';
import type { ClosedReason, HostQuota } from '../store/quotas.js';
import type { Store } from '../store/store.js';
import { coerceError } from '../util/errors.js';
import type { FleetEvents } from './events.js';
import { enforcement, formatBytes, type Enforcement } from './trafficMath.js';

export interface QuotaEnforcerOptions {
  store: Pick<Store, 'hostQuotas' | 'markClosed' | 'raiseAlertLevel'>;
  accounting: Pick<TrafficAccounting, 'partOf' | 'change'>;
  events: Pick<FleetEvents, 'emit'>;
  /** A port closed (reason) or reopened (null): the Modem serving it journals it. */
  onPortChange?: ((imei: string, reason: ClosedReason | null, detail: string) => void) | undefined;
  log: Logger;
}

interface Held {
  quota: HostQuota;
  /** Reopened by the last look after the kernel stopped it: with this much payload through then. */
  reopened?: { token: string; payload: number } | undefined;
  /** Why the enforcer last closed its port (null: open); `quota.closedReason` is what is stored. */
  closed: ClosedReason | null;
  level: 0 | 80 | 100;
}

/**
 * The quotas and expiries of one host's modems, enforced at each read of the traffic table
 * (src/fleet/trafficMonitor.ts reads): `enforcement` (src/fleet/trafficMath.ts) decides per modem,
 * the kernel is changed first (a limit calibrated, a port the kernel stopped a little early
 * reopened for the rest with its quota reset, a spent or expired one closed), then the database and
 * the journal learn it and the 80 % and 100 % alerts are raised, once a period.
 */
export class QuotaEnforcer {
  private held = new Map<string, Held>();
  private ratios: ReadonlyMap<string, number> = new Map();
  private reloading: Promise<void> | undefined;
  private reloadAgain = false;

  constructor(private readonly options: QuotaEnforcerOptions) {}

  private get log(): Logger {
    return this.options.log;
  }

  /**
   * Reads this host's quotas. Coalesced: one query at a time, and one more after it when asked
   * meanwhile (a change committed while a read was under way is not missed).
   */
  reload(): Promise<void> {
    if (this.reloading) {
      this.reloadAgain = true;
      return this.reloading;
    }
    this.reloading = (async () => {
      try {
        do {
          this.reloadAgain = false;
          await this.readQuotas();
        } while (this.reloadAgain);
      } finally {
        this.reloading = undefined;
      }
    })();
    return this.reloading;
  }

  /** Resolves when no read of the quotas is under way (stop). */
  async idle(): Promise<void> {
    await this.reloading?.catch(() => undefined);
  }

  private async readQuotas(): Promise<void> {
    const rows = await this.options.store.hostQuotas();
    const next = new Map<string, Held>();
    // the same Held objects carry on (a read under way updates them)
    for (const quota of rows) {
      const was = this.held.get(quota.imei);
      if (!was) {
        next.set(quota.imei, { quota, closed: quota.closedReason, level: quota.alertLevel });
        continue;
      }
      const samePeriod = was.quota.periodStart.getTime() === quota.periodStart.getTime();
      was.level = samePeriod ? (Math.max(was.level, quota.alertLevel) as 0 | 80 | 100) : quota.alertLevel;
      was.quota = quota;
      next.set(quota.imei, was);
    }
    // a quota cleared while its port was closed: kept until it is open again
    for (const [imei, was] of this.held)
      if (!next.has(imei) && was.closed !== null) {
        was.quota = { ...was.quota, bytes: null, period: null, expiresAt: null };
        next.set(imei, was);
      }
    this.held = next;
  }

  /** What a new part starts with (before the first read calibrates it): closed when it must be. */
  initialFor(imei: string): { limit: number; closed: boolean } {
    const held = this.held.get(imei);
    if (!held) return { limit: NO_LIMIT, closed: false };
    const decision = this.decide(held, undefined, new Date());
    return { limit: decision.limit, closed: decision.closed !== null };
  }

  private decide(held: Held, reading: PartReading | undefined, now: Date, stalled = false): Enforcement {
    const q = held.quota;
    // while it serves: 1 (an L3 limit never lets more payload through than is left: the port stops
    // a little early and reopens for the rest); reopening after a stop, the ratio measured on what
    // went through since the last look (exact: both counted by the kernel)
    const over = reading !== undefined && reading.quotaUsed >= reading.quotaLimit;
    const ratio = over ? (this.ratios.get(reading.imei) ?? 1) : 1;
    return enforcement(
      {
        bytes: q.bytes,
        period: q.period,
        monthStartDay: q.monthStartDay,
        periodStart: q.periodStart,
        used: q.used,
        expiresAt: q.expiresAt,
        cursor: q.cursor,
      },
      reading && {
        token: reading.token,
        download: reading.download,
        upload: reading.upload,
        quotaUsed: reading.quotaUsed,
        quotaLimit: reading.quotaLimit,
      },
      now,
      ratio,
      NO_LIMIT,
      stalled,
    );
  }

  /**
   * One read's enforcement: decides per modem, changes the kernel first (limits, resets, the
   * `closed` set), then records. `ratios`: each modem's L3/payload ratio since the last read.
   * Resolves with when something changes by itself next (an expiry, a period's end).
   */
  async enforce(
    readings: readonly PartReading[],
    now: Date,
    ratios: ReadonlyMap<string, number>,
  ): Promise<number | undefined> {
    this.ratios = ratios;
    const kernel: PartChange[] = [];
    const changes: { imei: string; held: Held; decision: Enforcement }[] = [];
    let nextAt: number | undefined;
    for (const [imei, held] of this.held) {
      const reading = readings.find((r) => r.imei === imei);
      const over = reading !== undefined && reading.quotaUsed >= reading.quotaLimit;
      // reopened at the last look and stopped again with not a byte through: spent
      const stalled =
        over &&
        held.reopened !== undefined &&
        held.reopened.token === reading.token &&
        held.reopened.payload === reading.download + reading.upload;
      const decision = this.decide(held, reading, now, stalled);
      if (decision.nextChangeAt) nextAt = Math.min(nextAt ?? Infinity, decision.nextChangeAt.getTime());
      changes.push({ imei, held, decision });
      if (!reading) continue;
      const closed = decision.closed !== null;
      const change: PartChange = { slot: reading.slot, httpPort: 0, socksPort: 0 };
      if (closed !== reading.closed) change.closed = closed;
      if (!closed && (decision.reset || this.limitChanged(reading, decision.limit))) {
        change.limit = decision.limit;
        change.reset = decision.reset;
      }
      held.reopened =
        decision.reset && !closed
          ? { token: reading.token, payload: reading.download + reading.upload }
          : undefined;
      const part = this.options.accounting.partOf(imei);
      if (part && (change.closed !== undefined || change.limit !== undefined))
        kernel.push({ ...change, httpPort: part.httpPort, socksPort: part.socksPort });
    }
    // a modem without a quota or expiry (any more): its port is never held
    for (const r of readings) {
      if (this.held.has(r.imei) || (r.quotaLimit === NO_LIMIT && !r.closed)) continue;
      const part = this.options.accounting.partOf(r.imei);
      if (part)
        kernel.push({
          slot: r.slot,
          httpPort: part.httpPort,
          socksPort: part.socksPort,
          limit: NO_LIMIT,
          reset: r.quotaUsed >= r.quotaLimit,
          closed: false,
        });
    }
    // the kernel first: a port closes (or reopens) before anything is written about it
    if (kernel.length) await this.options.accounting.change(kernel);
    for (const { imei, held, decision } of changes) await this.record(imei, held, decision);
    return nextAt;
  }

  /** A new limit is worth an nft call: it moved by more than 0.1 % of what is left (16 KiB at least). */
  private limitChanged(r: PartReading, limit: number): boolean {
    if (limit === r.quotaLimit) return false;
    const left = Math.max(0, limit - r.quotaUsed);
    return Math.abs(limit - r.quotaLimit) > Math.max(16 * 1024, left / 1000);
  }

  /** The database and the journal learn what the kernel now does; alerts once per period. */
  private async record(imei: string, held: Held, decision: Enforcement): Promise<void> {
    const { store, events } = this.options;
    const q = held.quota;
    try {
      if (decision.closed !== held.closed) {
        held.closed = decision.closed;
        const detail =
          decision.closed === 'expired'
            ? `expired at ${q.expiresAt?.toISOString() ?? '?'}`
            : decision.closed === 'quota_exceeded'
              ? `used ${formatBytes(decision.usedPayload ?? 0)} of its ${q.period} quota of ${formatBytes(q.bytes ?? 0)}`
              : 'serving again';
        this.log.info(
          { modem: imei, closed: decision.closed, detail },
          decision.closed ? 'port closed' : 'port reopened',
        );
        this.options.onPortChange?.(imei, decision.closed, detail);
      }
      // stored (retried at the next read while the database is away); the row changing says once
      if (decision.closed !== q.closedReason) {
        const changed = await store.markClosed(imei, decision.closed);
        q.closedReason = decision.closed;
        if (changed && decision.closed === 'expired')
          events.emit('alert', {
            alert: {
              kind: 'expired',
              severity: 'warning',
              message: `modem ${imei} expired: its port is closed`,
            },
            imei,
          });
      }
      // 80 % then 100 %, each once a period (a quota spent at one go raises both)
      for (const level of [80, 100] as const) {
        if (decision.level < level || held.level >= level || !decision.periodStart || q.bytes === null)
          continue;
        held.level = level;
        if (await store.raiseAlertLevel(imei, level, decision.periodStart))
          events.emit('alert', {
            alert: {
              kind: level === 100 ? 'quota_exceeded' : 'quota_warning',
              severity: 'warning',
              message:
                level === 100
                  ? `modem ${imei} used its ${q.period} quota of ${formatBytes(q.bytes)}: its port is closed`
                  : `modem ${imei} used ${formatBytes(decision.usedPayload ?? 0)}, 80 % of its ${q.period} quota of ${formatBytes(q.bytes)}`,
            },
            imei,
          });
      }
    } catch (err) {
      // the kernel already does it; the row and the alert follow at the next read
      if (decision.level > 0) held.level = Math.min(held.level, q.alertLevel) as 0 | 80 | 100;
      this.log.warn(
        { err: coerceError(err), modem: imei },
        'quota state not stored; retried at the next read',
      );
    }
  }
}
