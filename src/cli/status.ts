import { formatBytes } from '../fleet/trafficMath.js';
import type { ModemView } from '../store/modems.js';
import type { TrafficTotals } from '../store/traffic.js';

function ago(since: Date, now: number): string {
  const s = Math.max(0, Math.round((now - since.getTime()) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

/** Signal bars 0-4 from RSSI dBm, as operators read them. */
export function bars(rssi: number | null): string {
  if (rssi === null) return '-';
  const n = rssi >= -65 ? 4 : rssi >= -75 ? 3 : rssi >= -85 ? 2 : rssi >= -95 ? 1 : 0;
  return `${'#'.repeat(n)}${'.'.repeat(4 - n)} ${rssi}`;
}

/** Download and upload (`↓1.20 GB ↑35.0 MB`), `-` for none. */
function bytesPair(t: { download: number; upload: number } | undefined): string {
  return t ? `↓${formatBytes(t.download)} ↑${formatBytes(t.upload)}` : '-';
}

/**
 * The `modemfleet status` table: IMEI, state (with the reason a port is closed: `quota_exceeded`,
 * `expired`), time in state, public address (what the internet sees through the port), the modem's
 * own address, ports, operator, signal, bytes today and this month (UTC; download ↓ and upload ↑).
 */
export function formatStatusTable(
  rows: readonly ModemView[],
  now = Date.now(),
  traffic: ReadonlyMap<string, TrafficTotals> = new Map(),
): string {
  if (rows.length === 0) return 'no modems known yet';
  const table = [
    ['IMEI', 'STATE', 'FOR', 'PUBLIC', 'ADDRESS', 'HTTP', 'SOCKS', 'OPERATOR', 'SIGNAL', 'TODAY', 'MONTH'],
    ...rows.map((r) => [
      r.imei,
      r.state === 'error' && r.reason
        ? `error (${r.reason})`
        : r.reason
          ? `${r.substate ?? r.state} (${r.reason})`
          : (r.substate ?? r.state),
      ago(r.since, now),
      r.publicIp ?? '-',
      r.wanIp ?? '-',
      r.httpPort === null ? '-' : String(r.httpPort),
      r.socksPort === null ? '-' : String(r.socksPort),
      (r.operator ?? '-').slice(0, 20),
      bars(r.rssi),
      bytesPair(traffic.get(r.imei)?.today),
      bytesPair(traffic.get(r.imei)?.month),
    ]),
  ];
  const widths = table[0]?.map((_, i) => Math.max(...table.map((row) => (row[i] ?? '').length))) ?? [];
  return table
    .map((row) =>
      row
        .map((cell, i) => cell.padEnd(widths[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
