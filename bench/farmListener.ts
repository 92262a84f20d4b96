// The farm benchmark's clock of record for notifications (bench/farm.ts): a process that only
// listens, so that when a NOTIFY arrives is never delayed by the benchmark's other work (or hidden
// by sharing the inspector's loop):   node --import tsx bench/farmListener.ts   (MF_FARM_LISTENER)
// IPC: → { type: 'started' }; { type: 'window', on } marks the background window; { type: 'record',
// on } records each transition's arrival (`imei:seq` → ms); { type: 'report' } → { type: 'report',
// lags, windowLags, notified } (lag: the transition's `at` → its NOTIFY here, i.e. committed);
// { type: 'stop' } ends it. Times: performance.timeOrigin + performance.now(), as every process.
import { openSql } from '../src/store/database.js';
import { Store } from '../src/store/store.js';

export type FarmListenerRequest =
  { type: 'window'; on: boolean } | { type: 'record'; on: boolean } | { type: 'report' } | { type: 'stop' };
export type FarmListenerReply =
  | { type: 'started' }
  | { type: 'report'; lags: number[]; windowLags: number[]; notified: [string, number][] }
  | { type: 'failed'; message: string };

const wall = (): number => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const url = process.env['MF_FARM_LISTENER'] ?? '';
  const send = (m: FarmListenerReply): void => void process.send?.(m);
  const sql = openSql(url, { max: 1, application: 'bench-listener' });
  const store = new Store({ sql, url, hostId: 'bench-listener' });
  const lags: number[] = [];
  const windowLags: number[] = [];
  const notified = new Map<string, number>();
  let inWindow = false;
  let recording = false;
  const listener = await store.listen(['modem_status_change'], (n) => {
    const t = wall();
    for (const tr of (n.payload['transitions'] ?? []) as { imei: string; seq: number; at: string }[]) {
      const lag = t - Date.parse(tr.at);
      lags.push(lag);
      if (inWindow) windowLags.push(lag);
      if (recording) notified.set(`${tr.imei}:${tr.seq}`, t);
    }
  });
  const stop = async (): Promise<void> => {
    await listener.stop().catch(() => undefined);
    await sql.end().catch(() => undefined);
    if (process.connected) process.disconnect();
  };
  process.on('message', (m: FarmListenerRequest) => {
    if (m.type === 'window') inWindow = m.on;
    else if (m.type === 'record') recording = m.on;
    else if (m.type === 'report') send({ type: 'report', lags, windowLags, notified: [...notified] });
    else void stop();
  });
  process.on('disconnect', () => void stop());
  send({ type: 'started' });
}

main().catch((err: unknown) => {
  process.send?.({ type: 'failed', message: String(err) } satisfies FarmListenerReply);
  process.exitCode = 1;
});
