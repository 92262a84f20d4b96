import { connect, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { onlineCount, startFarm, TOKEN, until, type TestFarm } from '../helpers/farm.js';
import WebSocket from 'ws';
import { WsClient as Client } from '../helpers/wsClient.js';

let farm: TestFarm | undefined;
const clients: Client[] = [];
const sockets: Socket[] = [];

afterEach(async () => {
  for (const c of clients.splice(0)) c.close();
  for (const s of sockets.splice(0)) s.destroy();
  await farm?.stop();
  farm = undefined;
});

function client(f: TestFarm, headers?: Record<string, string>): Client {
  const c = new Client(f.url, headers);
  clients.push(c);
  return c;
}

describe('inspector WebSocket /ws', () => {
  it('sends a snapshot, then every transition with its seq, rows, commands; ping/pong; bad messages answered', async () => {
    const f = (farm = await startFarm({ modems: 3 }));
    await until(async () => (await onlineCount(f)) === 3, 30_000, '3 online');
    const c = client(f);
    const snapshot = await c.next((m) => m.type === 'snapshot');
    const modems = snapshot['modems'] as { imei: string; seq: number; state: string }[];
    expect(modems.map((m) => m.state)).toEqual(['online', 'online', 'online']);
    const target = modems[0];
    if (!target) throw new Error('no modem');

    const from = c.messages.length;
    await f.store.insertCommand(target.imei, 'disable', 'test');
    await c.next((m) => m.type === 'command' && m['status'] === 'done', from, 20_000);
    // the command's result and the journal are written by different writers: either may come first
    await c.next((m) => m.type === 'transition' && m['imei'] === target.imei && m['to'] === 'disabled', from);
    const transitions = c.messages
      .slice(from)
      .filter((m) => m.type === 'transition' && m['imei'] === target.imei) as unknown as {
      seq: number;
      to: string;
    }[];
    // contiguous from the snapshot's seq, ending in disabled
    expect(transitions.map((t) => t.seq)).toEqual(transitions.map((_, i) => target.seq + 1 + i));
    expect(transitions.at(-1)?.to).toBe('disabled');
    const row = await c.next(
      (m) => m.type === 'modem' && (m['modem'] as { state: string }).state === 'disabled',
      from,
    );
    expect(row['modem']).toMatchObject({ imei: target.imei, desiredState: 'disabled' });

    c.send({ type: 'ping' });
    await c.next((m) => m.type === 'pong');
    c.send('not json');
    c.send({ type: 'subscribe', to: 'everything' });
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await until(() => c.messages.filter((m) => m.type === 'error').length === 3, 5_000, 'three errors');
    expect(c.closed).toBeUndefined();

    // a message over the size limit closes the connection (1009), the server carries on
    c.send({ type: 'ping', pad: 'x'.repeat(10_000) });
    await until(() => c.closed !== undefined, 5_000, 'close');
    expect(c.closed?.code).toBe(1009);
    const again = client(f);
    await again.next((m) => m.type === 'snapshot');
  });

  it('a client that sees a gap asks for a resync and gets a fresh snapshot; events of other hosts arrive via NOTIFY', async () => {
    const f = (farm = await startFarm({ modems: 2 }));
    await until(async () => (await onlineCount(f)) === 2, 30_000, '2 online');
    const c = client(f);
    const snapshot = await c.next((m) => m.type === 'snapshot');
    const imei = (snapshot['modems'] as { imei: string }[])[0]?.imei ?? '';

    // another host (its own store and connection) journals a modem of its own
    const other = new Store({ sql: f.db.sql, url: f.db.url, hostId: 'host-b' });
    await other.registerHost();
    const at = new Date();
    const foreign = '359000000000017';
    await other.appendTransitions([
      { imei: foreign, seq: 1, from: null, to: 'detecting', event: 'start', at, host: 'host-b' },
      {
        imei: foreign,
        seq: 2,
        from: 'detecting',
        to: 'initializing.identity',
        event: 'device.ok',
        at,
        host: 'host-b',
      },
    ]);
    const seen = await c.next((m) => m.type === 'transition' && m['imei'] === foreign && m['seq'] === 2);
    expect(seen).toMatchObject({ host: 'host-b', to: 'initializing.identity' });
    await c.next((m) => m.type === 'modem' && (m['modem'] as { imei: string }).imei === foreign);

    // the client drops one transition (as a lost message would), sees the next seq jump, resyncs
    const from = c.messages.length;
    await f.store.insertCommand(imei, 'rotate', 'test');
    await c.next((m) => m.type === 'command' && m['status'] === 'done', from, 20_000);
    const ts = c.messages.slice(from).filter((m) => m.type === 'transition' && m['imei'] === imei);
    expect(ts.length).toBeGreaterThan(2);
    const seqs = ts.map((t) => t['seq'] as number);
    const kept = seqs.filter((_, i) => i !== 1); // lost the second
    const gap = kept.findIndex((s, i) => i > 0 && s !== (kept[i - 1] ?? 0) + 1);
    expect(gap).toBeGreaterThan(0);
    const beforeResync = c.messages.length;
    c.send({ type: 'resync' });
    await c.next((m) => m.type === 'resync', beforeResync);
    const fresh = await c.next((m) => m.type === 'snapshot', beforeResync);
    const now = (fresh['modems'] as { imei: string; seq: number }[]).find((m) => m.imei === imei);
    expect(now?.seq).toBeGreaterThanOrEqual(Math.max(...seqs));
    expect((fresh['modems'] as { imei: string }[]).map((m) => m.imei)).toContain(foreign);
  });

  it('after its listen connection is lost, every client is told to resync and gets a snapshot', async () => {
    const f = (farm = await startFarm({ modems: 1 }));
    await until(async () => (await onlineCount(f)) === 1, 30_000, '1 online');
    const c = client(f);
    await c.next((m) => m.type === 'snapshot');
    const from = c.messages.length;
    f.dbProxy.cut();
    await new Promise((r) => setTimeout(r, 500));
    f.dbProxy.up();
    await c.next((m) => m.type === 'resync' && m['reason'] === 'listen_reconnected', from, 20_000);
    await c.next((m) => m.type === 'snapshot', from, 20_000);
  });

  it('refuses a missing or wrong token (401), more clients than the limit (503), unknown paths (404)', async () => {
    const f = (farm = await startFarm({ modems: 1, limits: { maxClients: 2 } }));
    const status = (path: string, headers: Record<string, string> = {}) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(f.url.replace(/^http/, 'ws') + path, { headers });
        ws.on('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.on('open', () => {
          resolve(101);
          ws.terminate();
        });
        ws.on('error', () => undefined);
      });
    expect(await status('/ws')).toBe(401);
    expect(await status('/ws?token=wrong-wrong-wrong-wrong')).toBe(401);
    expect(await status('/ws', { authorization: 'Bearer nope' })).toBe(401);
    expect(await status(`/ws?token=${TOKEN}`)).toBe(101);
    expect(await status(`/elsewhere?token=${TOKEN}`)).toBe(404);
    const a = client(f);
    const b = client(f);
    await a.next((m) => m.type === 'snapshot');
    await b.next((m) => m.type === 'snapshot');
    expect(await status(`/ws?token=${TOKEN}`)).toBe(503);
  });

  it('a client that never reads is cut off from updates (bounded buffer), then disconnected; a reading client gets everything', async () => {
    const bufferLimit = 64 * 1024;
    const f = (farm = await startFarm({
      modems: 1,
      limits: { clientBufferBytes: bufferLimit, clientStallMs: 3_000 },
    }));
    await until(async () => (await onlineCount(f)) === 1, 30_000, '1 online');
    const imei = (await f.store.modems())[0]?.imei ?? '';

    // the slow client: a raw socket that completes the handshake, then stops reading
    const { port } = f.inspector.address;
    const slow = connect(port, '127.0.0.1');
    sockets.push(slow);
    await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
    slow.write(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: Bearer ${TOKEN}\r\n\r\n`,
    );
    await new Promise<void>((resolve) => slow.once('data', () => resolve()));
    slow.pause();
    const reader = client(f);
    await reader.next((m) => m.type === 'snapshot');
    await until(() => f.inspector.hub.size === 2, 5_000, 'two clients');

    // ~30 MB of updates (distinct payloads: identical ones in a transaction are merged): far more than socket buffers and the client limit
    const heapBefore = process.memoryUsage().heapUsed;
    const stats = () => f.inspector.hub.stats;
    const batches = 12;
    const perBatch = 10_000;
    for (let i = 0; i < batches; i++) {
      await f.db.sql`
        select pg_notify('modem_health', json_build_object('imei', ${imei}::text, 'at', now(), 'rssi', -70,
          'rsrp', -100, 'rsrq', -10, 'sinr', g, 'operator', repeat('x', 60), 'technology', 'LTE')::text)
        from generate_series(1, ${perBatch}) g`;
    }
    await until(() => stats().disconnectedStalled === 1, 30_000, 'the stalled client to be disconnected');
    expect(stats().slowClients).toBeGreaterThanOrEqual(1);
    expect(stats().messagesDropped).toBeGreaterThan(0);
    // never more than the limit plus one message waited in memory for a client
    expect(stats().maxBufferedBytes).toBeLessThanOrEqual(bufferLimit + 1024);
    expect(process.memoryUsage().heapUsed - heapBefore).toBeLessThan(64 * 1024 * 1024);
    expect(f.inspector.hub.size).toBe(1);

    // the reading client (in this busy process it may itself fall behind for a moment, or the
    // listen connection, its heartbeat queued behind the burst, is rebuilt: either way it gets a
    // resync and a snapshot instead of the backlog) still receives what comes next
    const alert = await f.store.raiseAlert({ kind: 'marker', severity: 'info', message: 'after the burst' });
    await reader.next(
      (m) =>
        (m.type === 'alert' && m['id'] === alert) ||
        (m.type === 'snapshot' && (m['alerts'] as { id: number }[]).some((a) => a.id === alert)),
      0,
      30_000,
    );
    const health = reader.messages.filter((m) => m.type === 'health').length;
    const resynced = reader.messages.some(
      (m) => m.type === 'resync' && (m['reason'] === 'slow_client' || m['reason'] === 'listen_reconnected'),
    );
    expect(health >= batches * perBatch || resynced).toBe(true);
    expect(reader.closed).toBeUndefined();
  }, 120_000);
});
