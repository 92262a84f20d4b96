// The farm benchmark's inspector (bench/farm.ts), in a process of its own as a farm runs it, so that
// the benchmark's own work (its listener, HTTP reads, the browser's driver) never shares its event
// loop:   node --import tsx bench/farmInspector.ts   (forked with IPC; its settings in MF_FARM_INSPECTOR)
// IPC: → { type: 'started', url }; { type: 'loop', on: true } starts measuring the event loop's delay,
// { type: 'loop', on: false } → { type: 'loop', p99Ms, maxMs }; { type: 'stop' } → { type: 'stopped' }.
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { Inspector } from '../src/inspector/inspector.js';
import { openSql } from '../src/store/database.js';
import { Store } from '../src/store/store.js';

export interface FarmInspectorSettings {
  url: string;
  token: string;
  /** The WebSocket client caps (all from one address): raised by configuration, not bypassed. */
  maxClients: number;
}

export type FarmInspectorRequest = { type: 'loop'; on: boolean } | { type: 'stop' };
export type FarmInspectorReply =
  | { type: 'started'; url: string }
  | { type: 'loop'; p99Ms: number; maxMs: number }
  | { type: 'stopped' }
  | { type: 'failed'; message: string };

async function main(): Promise<void> {
  const s = JSON.parse(process.env['MF_FARM_INSPECTOR'] ?? '{}') as FarmInspectorSettings;
  const send = (m: FarmInspectorReply): void => void process.send?.(m);
  const sql = openSql(s.url, { max: 4, application: 'modemfleet-inspector' });
  const store = new Store({ sql, url: s.url, hostId: 'bench-inspector' });
  const inspector = new Inspector({
    store,
    host: '127.0.0.1',
    port: 0,
    token: s.token,
    limits: { maxClients: s.maxClients, maxClientsPerAddress: s.maxClients },
  });
  let loop: IntervalHistogram | undefined;
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await inspector.stop().catch(() => undefined);
      await sql.end().catch(() => undefined);
      send({ type: 'stopped' });
      if (process.connected) process.disconnect();
    })());
  process.on('message', (m: FarmInspectorRequest) => {
    if (m.type === 'loop' && m.on) {
      loop = monitorEventLoopDelay({ resolution: 10 });
      loop.enable();
    } else if (m.type === 'loop' && loop) {
      loop.disable();
      send({
        type: 'loop',
        p99Ms: Number((loop.percentile(99) / 1e6).toFixed(1)),
        maxMs: Number((loop.max / 1e6).toFixed(1)),
      });
    } else if (m.type === 'stop') void stop();
  });
  process.on('disconnect', () => void stop());
  await inspector.start();
  send({ type: 'started', url: inspector.url });
}

main().catch((err: unknown) => {
  process.send?.({ type: 'failed', message: String(err) } satisfies FarmInspectorReply);
  process.exitCode = 1;
});
