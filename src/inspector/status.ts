import { Registry } from 'prom-client';
import type { SupervisorStatus } from '../fleet/supervisor.js';
import type { Store } from '../store/store.js';
import { coerceError } from '../util/errors.js';
import { settlesWithin } from '../util/time.js';
import type { Hub } from './hub.js';
import { perModemLines, perModemMetricsText, registerFarmMetrics, type Scrape } from './farmMetrics.js';

export interface StatusSource {
  status(): SupervisorStatus;
}

export interface Readiness {
  ready: boolean;
  checks: {
    database: { ok: boolean; latencyMs?: number; error?: string };
    journal: {
      ok: boolean;
      mode?: string;
      queued?: number;
      lagMs?: number;
      spoolBytes?: number;
    };
    supervisor: { ok: boolean; started: boolean };
  };
}

const UPTIME_CACHE_MS = 60_000;

/**
 * What `/ready`, `/health` and `/metrics` report: the database answers, the journal keeps up
 * (not spooling, nothing queued for long), the supervisor has started. One database probe at a
 * time: during an outage, probes do not pile up behind each other.
 */
export class StatusReporter {
  private probe: Promise<{ ok: boolean; latencyMs?: number; error?: string }> | undefined;
  /** The last `/metrics` text and when it was rendered (or the render under way). */
  private cached: { at: number; text: Promise<string> } | undefined;
  /** Renders of `/metrics` (each reads the database): scrapes within `metricsCacheMs` share one. */
  metricsRenders = 0;
  /** The farm's uptime reads the journal of 30 days: once a minute is plenty for a ratio. */
  private uptime: { at: number; value: ReturnType<Store['uptime']> } | undefined;
  /** This reporter's metrics (several inspectors may live in one process: never the global registry). */
  private readonly register = new Registry();
  /** The render under way: its metrics' collect() read it. */
  private scrape: Promise<Scrape> | undefined;

  constructor(
    private readonly options: {
      store: Store;
      hub: Hub;
      supervisor: StatusSource | undefined;
      databaseTimeoutMs: number;
      journalLagMs: number;
      metricsCacheMs?: number;
    },
  ) {}

  /** Registers the metrics and starts prom-client's Node metrics (event loop delay, GC). */
  start(): void {
    registerFarmMetrics(this.register, {
      hub: this.options.hub,
      supervisor: this.options.supervisor,
      // evaluated when a collect() starts (synchronously, within render()): that render's scrape
      scrape: () => this.scrape ?? this.read(),
    });
  }

  private database(): Promise<{ ok: boolean; latencyMs?: number; error?: string }> {
    this.probe ??= (async () => {
      const started = performance.now();
      try {
        const ok = await settlesWithin(this.options.store.sql`select 1`, this.options.databaseTimeoutMs);
        return ok
          ? { ok: true, latencyMs: Math.round((performance.now() - started) * 10) / 10 }
          : { ok: false, error: `no answer within ${this.options.databaseTimeoutMs} ms` };
      } catch (err) {
        return { ok: false, error: coerceError(err).message.slice(0, 200) };
      }
    })().finally(() => {
      this.probe = undefined;
    });
    return this.probe;
  }

  /** `withErrors`: the database's error text too (for the token holder; it names hosts and users). */
  async readiness(withErrors = true): Promise<Readiness> {
    const probed = await this.database();
    const database = withErrors || probed.ok ? probed : { ok: false };
    const status = this.options.supervisor?.status();
    const journal = status
      ? {
          ok: status.journal.mode === 'direct' && status.journal.oldestMs < this.options.journalLagMs,
          mode: status.journal.mode,
          queued: status.journal.queued,
          lagMs: status.journal.oldestMs,
          spoolBytes: status.journal.spoolBytes,
        }
      : { ok: true };
    const supervisor = { ok: status ? status.started : true, started: status?.started ?? false };
    return {
      ready: database.ok && journal.ok && supervisor.ok,
      checks: { database, journal, supervisor },
    };
  }

  /** The Prometheus text, rendered at most once per `metricsCacheMs` (scrapes in between share it). */
  metrics(): Promise<string> {
    const now = performance.now();
    const cacheMs = this.options.metricsCacheMs ?? 0;
    if (this.cached && now - this.cached.at < cacheMs) return this.cached.text;
    const text = this.render();
    this.cached = { at: now, text };
    text.catch(() => {
      if (this.cached?.text === text) this.cached = undefined;
    });
    return text;
  }

  /** The content type of `metrics()`'s text (Prometheus text format 0.0.4). */
  get metricsContentType(): string {
    return this.register.contentType;
  }

  private async render(): Promise<string> {
    this.metricsRenders++;
    // every metric's collect() of this render reads this one scrape (one database read, one status)
    const scrape = (this.scrape = this.read());
    const [text, lines] = await Promise.all([
      this.register.metrics(),
      // the per-modem gauges: each modem's lines made once per change of its row, joined here
      scrape.then((s) =>
        s.modems ? this.options.hub.perRow('metrics', perModemLines).catch(() => undefined) : undefined,
      ),
    ]);
    return `${text}\n${perModemMetricsText(lines)}\n`;
  }

  /** What one scrape reads: the database (a part that fails is left out), the supervisor's status. */
  private async read(): Promise<Scrape> {
    const status = this.options.supervisor?.status();
    const database = await this.database();
    if (!database.ok) return { databaseUp: false, status };
    const store = this.options.store;
    const settle = <T>(p: Promise<T>): Promise<T | undefined> => p.catch(() => undefined);
    const now = Date.now();
    if (!this.uptime || now - this.uptime.at > UPTIME_CACHE_MS)
      this.uptime = { at: now, value: store.uptime(null) };
    const uptimeRead = this.uptime;
    const [modems, addresses, uptime] = await Promise.all([
      // one read of every modem: the counts by host and state, and per modem what a dashboard shows
      // of a port: up or not, and its signal (IMEI and host labels only: an IMEI is not an address)
      // (from the live stream's rows in memory, kept current by notifications)
      settle(this.options.hub.gaugeRows()),
      // the farm's addresses over the last day: counts only, never an address in a label
      settle(store.addressStats(null)).then((a) => a?.['24h']),
      uptimeRead.value.catch(() => {
        if (this.uptime === uptimeRead) this.uptime = undefined; // read again at the next scrape
        return undefined;
      }),
    ]);
    return { databaseUp: true, status, modems, addresses, uptime };
  }
}
