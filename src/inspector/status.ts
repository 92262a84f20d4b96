import type { SupervisorStatus } from '../fleet/supervisor.js';
import type { ModemGaugeRow } from '../store/modems.js';
import type { Store } from '../store/store.js';
import { coerceError } from '../util/errors.js';
import { settlesWithin } from '../util/time.js';
import type { Hub } from './hub.js';
import { histogramSamples, renderMetrics, type MetricFamily } from './metrics.js';

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

  private async render(): Promise<string> {
    this.metricsRenders++;
    const families: MetricFamily[] = [];
    const gauge = (name: string, help: string, value: number): void => {
      families.push({ name, help, type: 'gauge', samples: [{ value }] });
    };
    const counter = (name: string, help: string, samples: MetricFamily['samples']): void => {
      families.push({ name, help, type: 'counter', samples });
    };
    const database = await this.database();
    gauge(
      'modemfleet_database_up',
      'The database answered the last probe (1) or not (0).',
      database.ok ? 1 : 0,
    );
    if (database.ok) {
      try {
        // one read of every modem: the counts by host and state, and per modem what a dashboard
        // shows of a port: up or not, and its signal (IMEI and host labels only: an IMEI is not an
        // address; one series per modem and metric)
        const modems = await this.options.store.modemGauges();
        const counts = new Map<string, { host: string; state: string; value: number }>();
        for (const m of modems) {
          const key = `${m.host ?? ''}\0${m.state}`;
          const c = counts.get(key) ?? { host: m.host ?? '', state: m.state, value: 0 };
          c.value++;
          counts.set(key, c);
        }
        families.push({
          name: 'modemfleet_modems',
          help: 'Modems by host and state, as recorded in the database.',
          type: 'gauge',
          samples: [...counts.values()].map(({ host, state, value }) => ({ labels: { host, state }, value })),
        });
        // a dead host's modems keep their last state above; this says which of them nobody runs
        const stale = new Map<string, number>();
        for (const m of modems) stale.set(m.host ?? '', (stale.get(m.host ?? '') ?? 0) + (m.stale ? 1 : 0));
        families.push({
          name: 'modemfleet_modems_stale',
          help: 'Modems whose host is marked dead (no heartbeat within policy.hostDeadAfterMs), by host.',
          type: 'gauge',
          samples: [...stale].map(([host, value]) => ({ labels: { host }, value })),
        });
        const perModem = (name: string, help: string, value: (m: ModemGaugeRow) => number | null) =>
          families.push({
            name,
            help,
            type: 'gauge',
            samples: modems.flatMap((m) => {
              const v = value(m);
              return v === null ? [] : [{ labels: { imei: m.imei, host: m.host ?? '' }, value: v }];
            }),
          });
        perModem(
          'modemfleet_modem_online',
          'The modem is online (1) or not, or its host is dead (0).',
          (m) => (m.state === 'online' && !m.stale ? 1 : 0),
        );
        perModem('modemfleet_modem_rssi_dbm', 'Last RSSI of the modem, dBm.', (m) => m.rssi);
        perModem('modemfleet_modem_rsrp_dbm', 'Last RSRP of the modem (LTE), dBm.', (m) => m.rsrp);
        perModem('modemfleet_modem_sinr_db', 'Last SINR of the modem (LTE), dB.', (m) => m.sinr);
      } catch {
        // the probe just succeeded; a failure here leaves these families out of this scrape
      }
      try {
        // the farm's addresses over the last day: counts only, never an address in a label
        const day = (await this.options.store.addressStats(null))['24h'];
        gauge('modemfleet_rotations_24h', 'Rotations done in the last 24 hours (the farm).', day.rotations);
        gauge(
          'modemfleet_public_addresses_24h',
          'Distinct public addresses seen through the ports in the last 24 hours.',
          day.distinctAddresses,
        );
        gauge(
          'modemfleet_public_networks_24h',
          'Distinct /24 networks of those public addresses.',
          day.distinctNetworks,
        );
        if (day.reuseRate !== null)
          gauge(
            'modemfleet_rotation_reuse_ratio_24h',
            'Share of the last 24 hours of rotations that got a public address the modem had before.',
            day.reuseRate,
          );
      } catch {
        // as above
      }
      try {
        const now = Date.now();
        if (!this.uptime || now - this.uptime.at > UPTIME_CACHE_MS)
          this.uptime = { at: now, value: this.options.store.uptime(null) };
        const uptime = await this.uptime.value;
        families.push({
          name: 'modemfleet_uptime_ratio',
          help: 'The farm: time online over time wanted (not disabled), from the journal, by window.',
          type: 'gauge',
          samples: Object.entries(uptime)
            .filter(([, u]) => u.ratio !== null)
            .map(([window, u]) => ({ labels: { window }, value: u.ratio ?? 0 })),
        });
      } catch {
        this.uptime = undefined; // read again at the next scrape
      }
    }
    const s = this.options.supervisor?.status();
    if (s) {
      counter('modemfleet_transitions_total', 'Transitions this process persisted to the journal.', [
        { value: s.journal.persisted },
      ]);
      counter('modemfleet_transitions_spooled_total', 'Transitions written to the local spool.', [
        { value: s.journal.spooled },
      ]);
      counter('modemfleet_transitions_dropped_total', 'Transitions lost because the spool was full.', [
        { value: s.journal.dropped },
      ]);
      gauge('modemfleet_journal_queued', 'Transitions waiting to be written.', s.journal.queued);
      gauge(
        'modemfleet_journal_lag_seconds',
        'Age of the oldest unwritten transition.',
        s.journal.oldestMs / 1000,
      );
      gauge(
        'modemfleet_journal_spooling',
        'The journal writes to the spool (database away).',
        s.journal.mode === 'spooling' ? 1 : 0,
      );
      gauge('modemfleet_spool_bytes', 'Bytes in the journal spool.', s.journal.spoolBytes);
      counter('modemfleet_commands_total', 'Commands carried out by this process, by result.', [
        { labels: { result: 'done' }, value: s.commands.finished },
        { labels: { result: 'failed' }, value: s.commands.failed },
      ]);
      counter(
        'modemfleet_rotations_total',
        'Rotations carried out by this process, by result: done, or the failure code (same_public_ip, ...).',
        Object.entries(s.rotations).map(([result, value]) => ({ labels: { result }, value })),
      );
      families.push({
        name: 'modemfleet_command_duration_seconds',
        help: 'From a command inserted to its result written.',
        type: 'histogram',
        samples: histogramSamples(s.commands.latency),
      });
      counter('modemfleet_proxy_restarts_total', 'Proxy processes that exited or failed to start.', [
        { value: s.proxyRestarts },
      ]);
      counter('modemfleet_egress_checks_total', 'Egress checks through modem ports, by result.', [
        { labels: { result: 'ok' }, value: s.egress.checks - s.egress.failures },
        { labels: { result: 'failed' }, value: s.egress.failures },
      ]);
      gauge('modemfleet_data_planes', 'Modems whose routing and proxies run in this process.', s.dataPlanes);
      counter('modemfleet_alerts_raised_total', 'Alerts raised by this process.', [
        { value: s.alertsRaised },
      ]);
      gauge('modemfleet_alerts_waiting', 'Alerts waiting for the database.', s.alerts.waiting);
      counter('modemfleet_alerts_dropped_total', 'Alerts dropped while too many waited for the database.', [
        { value: s.alerts.dropped },
      ]);
      families.push({
        name: 'modemfleet_local_modems',
        help: 'Modem actors of this process by state.',
        type: 'gauge',
        samples: Object.entries(s.localModems).map(([state, value]) => ({ labels: { state }, value })),
      });
    }
    const hub = this.options.hub;
    counter('modemfleet_listen_reconnects_total', 'LISTEN connections re-established, by listener.', [
      { labels: { listener: 'inspector' }, value: hub.listenerStats?.reconnects ?? 0 },
      ...(s?.commandListener
        ? [{ labels: { listener: 'commands' }, value: s.commandListener.reconnects }]
        : []),
    ]);
    gauge('modemfleet_ws_clients', 'Connected WebSocket clients.', hub.stats.clients);
    counter('modemfleet_ws_messages_sent_total', 'Messages sent to WebSocket clients.', [
      { value: hub.stats.messagesSent },
    ]);
    counter(
      'modemfleet_ws_messages_dropped_total',
      'Updates not sent to slow clients (replaced by a resync).',
      [{ value: hub.stats.messagesDropped }],
    );
    counter('modemfleet_ws_resyncs_total', 'Snapshots sent again (slow client, reconnect, request).', [
      { value: hub.stats.resyncs },
    ]);
    counter(
      'modemfleet_notifications_malformed_total',
      'Notifications ignored: not JSON objects, oversized, or not the shape our triggers write.',
      [{ value: hub.stats.malformedNotifications + (hub.listenerStats?.malformed ?? 0) }],
    );
    const memory = process.memoryUsage();
    const cpu = process.cpuUsage();
    gauge('process_resident_memory_bytes', 'Resident memory of this process.', memory.rss);
    gauge('process_heap_used_bytes', 'V8 heap in use.', memory.heapUsed);
    counter('process_cpu_seconds_total', 'CPU time of this process.', [
      { value: (cpu.user + cpu.system) / 1e6 },
    ]);
    return renderMetrics(families);
  }
}
