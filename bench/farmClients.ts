// The farm benchmark's WebSocket clients (bench/farm.ts), in a process of their own so that their
// parsing does not share the inspector's event loop:   node --import tsx bench/farmClients.ts
// IPC: { type: 'connect', url, n } → { type: 'connected', snapshotMs: number[], snapshotBytes };
// { type: 'report', notified: [key, ms][] } → { type: 'report', latencies: number[], lost, received }.
// Times are performance.timeOrigin + performance.now() (one clock for every process of the machine).
import WebSocket from 'ws';

export type FarmClientsRequest =
  | { type: 'connect'; url: string; n: number }
  | { type: 'report'; notified: [string, number][] }
  | { type: 'stop' };
export type FarmClientsReply =
  | { type: 'connected'; snapshotMs: number[]; snapshotBytes: number }
  | { type: 'report'; latencies: number[]; lost: number; received: number }
  | { type: 'failed'; message: string };

const now = (): number => performance.timeOrigin + performance.now();
const SNAPSHOT = Buffer.from('{"type":"snapshot"');
const TRANSITION = Buffer.from('{"type":"transition"');

const clients: WebSocket[] = [];
/** Per client: `imei:seq` → when its transition arrived. */
const arrivals: Map<string, number>[] = [];
const send = (m: FarmClientsReply): void => void process.send?.(m);

function connectOne(url: string): Promise<{ ms: number; bytes: number }> {
  const t0 = now();
  const ws = new WebSocket(url, { perMessageDeflate: false });
  const seen = new Map<string, number>();
  clients.push(ws);
  arrivals.push(seen);
  return new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.on('message', (data: Buffer) => {
      const t = now();
      // the snapshot is recognised by its first bytes, never parsed (the client's parse is not the server's time)
      if (data.subarray(0, SNAPSHOT.length).equals(SNAPSHOT))
        return resolve({ ms: t - t0, bytes: data.length });
      if (!data.subarray(0, TRANSITION.length).equals(TRANSITION)) return;
      // its IMEI and seq only (100 clients in one process: a whole parse each would queue the others)
      const text = data.toString('latin1', 0, 200);
      const imei = /"imei":"([0-9]{15})"/.exec(text)?.[1];
      const seq = /"seq":([0-9]+)/.exec(text)?.[1];
      if (imei && seq) seen.set(`${imei}:${seq}`, t);
    });
  });
}

process.on('message', (m: FarmClientsRequest) => {
  void (async () => {
    if (m.type === 'connect') {
      const all = await Promise.all(Array.from({ length: m.n }, () => connectOne(m.url)));
      send({
        type: 'connected',
        snapshotMs: all.map((a) => a.ms),
        snapshotBytes: Math.max(...all.map((a) => a.bytes)),
      });
    } else if (m.type === 'report') {
      const latencies: number[] = [];
      let lost = 0;
      let received = 0;
      for (const seen of arrivals) {
        received += seen.size;
        for (const [key, at] of m.notified) {
          const t = seen.get(key);
          if (t === undefined) lost++;
          else latencies.push(Math.max(0, t - at));
        }
      }
      send({ type: 'report', latencies, lost, received });
    } else if (m.type === 'stop') {
      for (const ws of clients) ws.terminate();
      process.disconnect?.();
    }
  })().catch((err: unknown) => send({ type: 'failed', message: String(err) }));
});
process.on('disconnect', () => {
  for (const ws of clients) ws.terminate();
});
