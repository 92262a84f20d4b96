import type { TrafficFigures } from '../fleet/trafficMonitor.js';
import type { MetricFamily } from './metrics.js';

/**
 * `modemfleet_port_bytes_total{imei,direction}`: payload bytes through each modem's ports on this
 * host, as the kernel counts them (the customer's side: `download` to the customer, `upload` from
 * it; src/net/trafficTable.ts). A counter: it carries on across supervisor and proxy restarts (the
 * kernel keeps it) and starts from zero only when the modem's counters are created again.
 */
export function trafficFamilies(figures: readonly TrafficFigures[]): MetricFamily[] {
  return [
    {
      name: 'modemfleet_port_bytes_total',
      help: 'Payload bytes through a modem port as the kernel counts them, by direction (download: to the customer).',
      type: 'counter',
      samples: figures.flatMap((f) => [
        { labels: { imei: f.imei, direction: 'download' }, value: f.download },
        { labels: { imei: f.imei, direction: 'upload' }, value: f.upload },
      ]),
    },
  ];
}
