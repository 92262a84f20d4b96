import WebSocket from 'ws';
import { Inspector } from '../src/inspector/inspector.js';
import type { Sql } from '../src/store/database.js';
import { Store } from '../src/store/store.js';
import type { TransitionRecord } from '../src/store/types.js';
import { sleep } from '../src/util/time.js';

/**
 * NOTIFY → WebSocket latency: transitions are journaled at 1,000 per second (10 every 10 ms, one
 * commit each) and received twice: by a WebSocket client of the inspector and, as the baseline, by
 * a plain LISTEN on the same channel (postgres.js listen and JSON.parse, nothing else; one
 * notification carries a commit's transitions). Both latencies run from just before the INSERT is
 * sent to the moment the event arrives, so the insert's round trip is in both; the ratio is what the
 * inspector adds. "After commit" runs from the moment
 * the INSERT's acknowledgement reached us (an event that arrives before it counts as 0).
 */
export interface LatencyFigures {
  events: number;
  rate: number;
  wsP50Ms: number;
  wsP99Ms: number;
  rawP50Ms: number;
  rawP99Ms: number;
  p99Ratio: number;
  /** From the commit acknowledged to the event received. */
  wsAfterCommitP50Ms: number;
  wsAfterCommitP99Ms: number;
  rawAfterCommitP99Ms: number;
  lost: number;
}

const TOKEN = 'bench-token-0123456789abcdef';

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const v = sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
  return Number(v.toFixed(2));
}

export async function notifyLatency(sql: Sql, url: string, seconds: number): Promise<LatencyFigures> {
  const store = new Store({ sql, url, hostId: 'bench-latency' });
  await store.registerHost();
  const modems = 100;
  const imeis = Array.from({ length: modems }, (_, i) => String(353000000000000 + i));
  const seqs = new Map(imeis.map((i) => [i, 0]));
  const sent = new Map<string, number>();
  const acked = new Map<string, number>();
  const ws: number[] = [];
  const raw: number[] = [];
  const wsAfter: number[] = [];
  const rawAfter: number[] = [];
  const record = (key: string, now: number, from: number[], after: number[]): void => {
    const at = sent.get(key);
    if (at === undefined) return;
    from.push(now - at);
    const ack = acked.get(key);
    after.push(ack === undefined ? 0 : Math.max(0, now - ack));
  };

  const inspector = new Inspector({ store, host: '127.0.0.1', port: 0, token: TOKEN });
  await inspector.start();
  // one notification per stored batch: {"transitions":[{imei, seq, ...}, ...]}
  const listener = await store.listen(['modem_status_change'], (n) => {
    const now = performance.now();
    for (const t of n.payload['transitions'] as { imei: string; seq: number }[])
      record(`${t.imei}:${t.seq}`, now, raw, rawAfter);
  });
  const client = new WebSocket(`${inspector.url.replace('http', 'ws')}/ws?token=${TOKEN}`);
  await new Promise<void>((resolve, reject) => {
    client.once('message', () => resolve());
    client.once('error', reject);
  });
  client.on('message', (data: Buffer) => {
    const now = performance.now();
    const m = JSON.parse(data.toString()) as { type: string; imei?: string; seq?: number };
    if (m.type === 'transition') record(`${m.imei}:${m.seq}`, now, ws, wsAfter);
  });
  try {
    const batches = seconds * 100;
    const start = performance.now();
    let events = 0;
    for (let b = 0; b < batches; b++) {
      const batch: TransitionRecord[] = [];
      for (let k = 0; k < 10; k++) {
        const imei = imeis[(b * 10 + k) % modems] ?? '';
        const seq = (seqs.get(imei) ?? 0) + 1;
        seqs.set(imei, seq);
        batch.push({
          imei,
          seq,
          from: seq === 1 ? null : 'online.serving',
          to: seq % 2 ? 'online.polling' : 'online.serving',
          event: 'bench',
          at: new Date(),
          host: 'bench-latency',
        });
      }
      const t = performance.now();
      for (const r of batch) sent.set(`${r.imei}:${r.seq}`, t);
      await store.appendTransitions(batch);
      const ack = performance.now();
      for (const r of batch) acked.set(`${r.imei}:${r.seq}`, ack);
      events += batch.length;
      // pace to 100 batches a second
      const due = start + (b + 1) * 10;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
    }
    const rate = Math.round(events / ((performance.now() - start) / 1000));
    await sleep(500);
    const wsP99 = percentile(ws, 99);
    const rawP99 = percentile(raw, 99);
    return {
      events,
      rate,
      wsP50Ms: percentile(ws, 50),
      wsP99Ms: wsP99,
      rawP50Ms: percentile(raw, 50),
      rawP99Ms: rawP99,
      p99Ratio: Number((wsP99 / rawP99).toFixed(2)),
      wsAfterCommitP50Ms: percentile(wsAfter, 50),
      wsAfterCommitP99Ms: percentile(wsAfter, 99),
      rawAfterCommitP99Ms: percentile(rawAfter, 99),
      lost: events - ws.length,
    };
  } finally {
    client.terminate();
    await listener.stop();
    await inspector.stop();
  }
}
