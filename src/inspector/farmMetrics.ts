import { collectDefaultMetrics, type Registry } from 'prom-client';
import type { SupervisorStatus } from '../fleet/supervisor.js';
import type { AddressStats } from '../store/addresses.js';
import type { ModemGaugeRow } from '../store/modems.js';
import type { UptimeWindow, Uptime } from '../store/uptime.js';
import type { Hub } from './hub.js';
import { sourcedCounter, sourcedGauge, single, type Read, type Sample } from './metrics.js';
import type { StatusSource } from './status.js';

/** What one `/metrics` render read; a part that could not be read is undefined (left out). */
export interface Scrape {
  databaseUp: boolean;
  status: SupervisorStatus | undefined;
  modems?: ModemGaugeRow[] | undefined;
  addresses?: AddressStats | undefined;
  uptime?: Record<UptimeWindow, Uptime> | undefined;
}

/** prom-client default metrics that are gauges with a counter's `_total` suffix. */
const GAUGES_NAMED_TOTAL = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
] as const;

/**
 * The gauges with one series per modem (what a dashboard shows of a port: up or not, and its
 * signal; IMEI and host labels only: an IMEI is not an address). 10,000 modems are 40,000 series:
 * not prom-client's (it formats every sample on every scrape) but text made from each modem's row
 * once, when the row changes (`Hub.perRow`), and joined per scrape: `perModemMetricsText`.
 */
export const PER_MODEM_GAUGES: readonly {
  name: string;
  help: string;
  value: (m: ModemGaugeRow) => number | null;
}[] = [
  {
    name: 'modemfleet_modem_online',
    help: 'The modem is online (1) or not, or its host is dead (0).',
    value: (m) => (m.state === 'online' && !m.stale ? 1 : 0),
  },
  { name: 'modemfleet_modem_rssi_dbm', help: 'Last RSSI of the modem, dBm.', value: (m) => m.rssi },
  { name: 'modemfleet_modem_rsrp_dbm', help: 'Last RSRP of the modem (LTE), dBm.', value: (m) => m.rsrp },
  { name: 'modemfleet_modem_sinr_db', help: 'Last SINR of the modem (LTE), dB.', value: (m) => m.sinr },
];

/** A label value or help text in the text format (as prom-client escapes it). */
const escapeText = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeLabel = (s: string): string => escapeText(s).replace(/"/g, '\\"');
const valueText = (v: number): string =>
  Number.isNaN(v) ? 'Nan' : Number.isFinite(v) ? String(v) : v < 0 ? '-Inf' : '+Inf';

/** One modem's line of each per-modem gauge ('' where it has no value). */
export function perModemLines(m: ModemGaugeRow): string[] {
  const labels = `{imei="${escapeLabel(m.imei)}",host="${escapeLabel(m.host ?? '')}"}`;
  return PER_MODEM_GAUGES.map((g) => {
    const v = g.value(m);
    return v === null ? '' : `\n${g.name}${labels} ${valueText(v)}`;
  });
}

/**
 * The per-modem gauges in the text format, as prom-client would print them after its own metrics
 * (each family: HELP, TYPE, its series; families apart by a blank line). `lines`: each modem's
 * `perModemLines`, or undefined when the modems could not be read (the families have no series).
 */
export function perModemMetricsText(lines: readonly string[][] | undefined): string {
  return PER_MODEM_GAUGES.map((g, i) => {
    let text = `# HELP ${g.name} ${escapeText(g.help)}\n# TYPE ${g.name} gauge`;
    for (const modem of lines ?? []) text += modem[i] ?? '';
    return text;
  }).join('\n\n');
}

/**
 * `/metrics`: every metric of an inspector, in its own registry, each read from the scrape under way
 * when prom-client collects it (names, types, labels and meanings are what dashboards and
 * deploy/prometheus-rules.yml use: extend, never rename).
 */
export function registerFarmMetrics(
  register: Registry,
  options: { hub: Hub; supervisor: StatusSource | undefined; scrape: () => Promise<Scrape> },
): void {
  const { hub, supervisor } = options;
  const scraped = async <T>(pick: (s: Scrape) => T): Promise<T> => pick(await options.scrape());
  const gauge = (name: string, help: string, read: Read, labelNames?: readonly string[]) =>
    sourcedGauge(register, { name, help, read, ...(labelNames ? { labelNames } : {}) });
  const counter = (name: string, help: string, read: Read, labelNames?: readonly string[]) =>
    sourcedCounter(register, { name, help, read, ...(labelNames ? { labelNames } : {}) });

  gauge('modemfleet_database_up', 'The database answered the last probe (1) or not (0).', () =>
    scraped((s) => single(s.databaseUp ? 1 : 0)),
  );
  gauge(
    'modemfleet_modems',
    'Modems by host and state, as recorded in the database.',
    () =>
      scraped((s) => {
        const counts = new Map<string, Sample & { labels: Record<string, string> }>();
        for (const m of s.modems ?? []) {
          const key = `${m.host ?? ''}\0${m.state}`;
          const c = counts.get(key) ?? { labels: { host: m.host ?? '', state: m.state }, value: 0 };
          c.value++;
          counts.set(key, c);
        }
        return [...counts.values()];
      }),
    ['host', 'state'],
  );
  // a dead host's modems keep their last state above; this says which of them nobody runs
  gauge(
    'modemfleet_modems_stale',
    'Modems whose host is marked dead (no heartbeat within policy.hostDeadAfterMs), by host.',
    () =>
      scraped((s) => {
        const stale = new Map<string, number>();
        for (const m of s.modems ?? [])
          stale.set(m.host ?? '', (stale.get(m.host ?? '') ?? 0) + (m.stale ? 1 : 0));
        return [...stale].map(([host, value]) => ({ labels: { host }, value }));
      }),
    ['host'],
  );
  gauge('modemfleet_rotations_24h', 'Rotations done in the last 24 hours (the farm).', () =>
    scraped((s) => single(s.addresses?.rotations)),
  );
  gauge(
    'modemfleet_public_addresses_24h',
    'Distinct public addresses seen through the ports in the last 24 hours.',
    () => scraped((s) => single(s.addresses?.distinctAddresses)),
  );
  gauge('modemfleet_public_networks_24h', 'Distinct /24 networks of those public addresses.', () =>
    scraped((s) => single(s.addresses?.distinctNetworks)),
  );
  gauge(
    'modemfleet_rotation_reuse_ratio_24h',
    'Share of the last 24 hours of rotations that got a public address the modem had before.',
    () => scraped((s) => single(s.addresses?.reuseRate)),
  );
  gauge(
    'modemfleet_uptime_ratio',
    'The farm: time online over time wanted (not disabled), from the journal, by window.',
    () =>
      scraped((s) =>
        Object.entries(s.uptime ?? {}).flatMap(([window, u]) =>
          u.ratio === null ? [] : [{ labels: { window }, value: u.ratio }],
        ),
      ),
    ['window'],
  );

  if (supervisor) {
    // the supervisor's counters: one status() per scrape (in the scrape), none without a supervisor
    const fromStatus = (pick: (s: SupervisorStatus) => readonly Sample[]) => () =>
      scraped((s) => (s.status ? pick(s.status) : []));
    counter(
      'modemfleet_transitions_total',
      'Transitions this process persisted to the journal.',
      fromStatus((s) => single(s.journal.persisted)),
    );
    counter(
      'modemfleet_transitions_spooled_total',
      'Transitions written to the local spool.',
      fromStatus((s) => single(s.journal.spooled)),
    );
    counter(
      'modemfleet_transitions_dropped_total',
      'Transitions lost because the spool was full.',
      fromStatus((s) => single(s.journal.dropped)),
    );
    gauge(
      'modemfleet_journal_queued',
      'Transitions waiting to be written.',
      fromStatus((s) => single(s.journal.queued)),
    );
    gauge(
      'modemfleet_journal_lag_seconds',
      'Age of the oldest unwritten transition.',
      fromStatus((s) => single(s.journal.oldestMs / 1000)),
    );
    gauge(
      'modemfleet_journal_spooling',
      'The journal writes to the spool (database away).',
      fromStatus((s) => single(s.journal.mode === 'spooling' ? 1 : 0)),
    );
    gauge(
      'modemfleet_spool_bytes',
      'Bytes in the journal spool.',
      fromStatus((s) => single(s.journal.spoolBytes)),
    );
    counter(
      'modemfleet_commands_total',
      'Commands carried out by this process, by result.',
      fromStatus((s) => [
        { labels: { result: 'done' }, value: s.commands.finished },
        { labels: { result: 'failed' }, value: s.commands.failed },
      ]),
      ['result'],
    );
    counter(
      'modemfleet_rotations_total',
      'Rotations carried out by this process, by result: done, or the failure code (same_public_ip, ...).',
      fromStatus((s) =>
        Object.entries(s.rotations).map(([result, value]) => ({ labels: { result }, value })),
      ),
      ['result'],
    );
    // observed by the command processor as commands finish (a prom-client histogram in no registry)
    register.registerMetric(supervisor.status().commands.latency);
    counter(
      'modemfleet_proxy_restarts_total',
      'Proxy processes that exited or failed to start.',
      fromStatus((s) => single(s.proxyRestarts)),
    );
    counter(
      'modemfleet_egress_checks_total',
      'Egress checks through modem ports, by result.',
      fromStatus((s) => [
        { labels: { result: 'ok' }, value: s.egress.checks - s.egress.failures },
        { labels: { result: 'failed' }, value: s.egress.failures },
      ]),
      ['result'],
    );
    gauge(
      'modemfleet_data_planes',
      'Modems whose routing and proxies run in this process.',
      fromStatus((s) => single(s.dataPlanes)),
    );
    counter(
      'modemfleet_alerts_raised_total',
      'Alerts raised by this process.',
      fromStatus((s) => single(s.alertsRaised)),
    );
    gauge(
      'modemfleet_alerts_waiting',
      'Alerts waiting for the database.',
      fromStatus((s) => single(s.alerts.waiting)),
    );
    counter(
      'modemfleet_alerts_dropped_total',
      'Alerts dropped while too many waited for the database.',
      fromStatus((s) => single(s.alerts.dropped)),
    );
    gauge(
      'modemfleet_local_modems',
      'Modem actors of this process by state.',
      fromStatus((s) =>
        Object.entries(s.localModems).map(([state, value]) => ({ labels: { state }, value })),
      ),
      ['state'],
    );
    // payload bytes through each modem's ports on this host as the kernel counts them (the
    // customer's side: download to the customer, upload from it; src/net/trafficTable.ts): the
    // kernel keeps the count across supervisor and proxy restarts and handovers, so it only starts
    // from zero when the modem's counters are created again (src/fleet/trafficMonitor.ts)
    counter(
      'modemfleet_port_bytes_total',
      'Payload bytes through a modem port as the kernel counts them, by direction (download: to the customer).',
      fromStatus((s) =>
        s.traffic.flatMap((f) => [
          { labels: { imei: f.imei, direction: 'download' }, value: f.download },
          { labels: { imei: f.imei, direction: 'upload' }, value: f.upload },
        ]),
      ),
      ['imei', 'direction'],
    );
  }
  counter(
    'modemfleet_listen_reconnects_total',
    'LISTEN connections re-established, by listener.',
    () =>
      scraped((s) => [
        { labels: { listener: 'inspector' }, value: hub.listenerStats?.reconnects ?? 0 },
        ...(s.status?.commandListener
          ? [{ labels: { listener: 'commands' }, value: s.status.commandListener.reconnects }]
          : []),
      ]),
    ['listener'],
  );
  gauge('modemfleet_ws_clients', 'Connected WebSocket clients.', () => single(hub.stats.clients));
  counter('modemfleet_ws_messages_sent_total', 'Messages sent to WebSocket clients.', () =>
    single(hub.stats.messagesSent),
  );
  counter(
    'modemfleet_ws_messages_dropped_total',
    'Updates not sent to slow clients (replaced by a resync).',
    () => single(hub.stats.messagesDropped),
  );
  counter('modemfleet_ws_resyncs_total', 'Snapshots sent again (slow client, reconnect, request).', () =>
    single(hub.stats.resyncs),
  );
  counter(
    'modemfleet_notifications_malformed_total',
    'Notifications ignored: not JSON objects, oversized, or not the shape our triggers write.',
    () => single(hub.stats.malformedNotifications + (hub.listenerStats?.malformed ?? 0)),
  );
  // the dashboard's heap panel (prom-client's own heap metrics are nodejs_heap_*)
  gauge('process_heap_used_bytes', 'V8 heap in use.', () => single(process.memoryUsage().heapUsed));
  // prom-client's Node metrics: process_resident_memory_bytes, process_cpu_seconds_total, event loop
  // lag (nodejs_eventloop_lag_*), GC (nodejs_gc_duration_seconds), heap spaces, handles, ...
  collectDefaultMetrics({ register });
  // ...less the three gauges named like counters (promtool's lint refuses them); their series by
  // type stay: nodejs_active_handles, nodejs_active_requests, nodejs_active_resources
  for (const name of GAUGES_NAMED_TOTAL) register.removeSingleMetric(name);
}
