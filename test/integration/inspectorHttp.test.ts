import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CommandProcessor } from '../../src/fleet/commandProcessor.js';
import { Inspector, type InspectorLimits } from '../../src/inspector/inspector.js';
import { openSql, type Sql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { until } from '../helpers/until.js';

// Issue 18, items 3 and 4, over real sockets and a real PostgreSQL: a rotation link used in a loop
// cannot jam the operator, and nobody can hold the inspector's connections open.

const TOKEN = 'test-token-0123456789abcdef';
const ROTATION_MS = 400;
const MIN_INTERVAL_MS = 5_000;
const A = '367000000000001'; // this host's modem: its commands run
const B = '367000000000002'; // another host's modem: its commands stay queued
const C = '367000000000003'; // another host's modem too
const LAN = '192.0.2.10'; // an address the operator allows

let db: TestDatabase;
let dbProxy: TcpProxy;
let sql: Sql;
let store: Store;
let processor: CommandProcessor;
const started = new Map<number, number>();
const inspectors: Inspector[] = [];

async function startInspector(limits: Partial<InspectorLimits>, allowedHosts?: string[]) {
  const inspector = new Inspector({
    store,
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    limits,
    ...(allowedHosts ? { allowedHosts } : {}),
    listenHeartbeatIntervalMs: 500,
    listenHeartbeatTimeoutMs: 2_000,
  });
  inspectors.push(inspector);
  await inspector.start();
  return inspector;
}

let main: Inspector;
let tight: Inspector;

beforeAll(async () => {
  db = await createTestDatabase();
  dbProxy = new TcpProxy(Number(new URL(db.url).port));
  await dbProxy.start();
  const u = new URL(db.url);
  u.port = String(dbProxy.port);
  sql = openSql(u.toString(), { max: 6 });
  store = new Store({ sql, url: u.toString(), hostId: 'host-h', commandQueueMax: 3 });
  await store.registerHost();
  await store.upsertModem({ imei: A });
  const other = new Store({ sql: db.sql, url: db.url, hostId: 'host-other' });
  await other.registerHost();
  await other.upsertModem({ imei: B });
  await other.upsertModem({ imei: C });
  processor = new CommandProcessor({
    store,
    rotationMinIntervalMs: MIN_INTERVAL_MS,
    pollIntervalMs: 1_000,
    heartbeatIntervalMs: 500,
    execute: async (c) => {
      started.set(c.id, Date.now());
      await new Promise((r) => setTimeout(r, c.kind === 'rotate' ? ROTATION_MS : 20));
      return { ok: true, result: { kind: c.kind } };
    },
  });
  await processor.start();
  main = await startInspector(
    { commandBurst: 10, commandRefillMs: 60_000, linkBurst: 4, linkRefillMs: 250, publicBurst: 10_000 },
    [LAN, '*.farm.example'],
  );
  tight = await startInspector({
    httpHeadersTimeoutMs: 1_000,
    httpRequestTimeoutMs: 1_500,
    httpKeepAliveTimeoutMs: 500,
    httpIdleTimeoutMs: 5_000,
    httpMaxConnections: 6,
  });
}, 60_000);

afterAll(async () => {
  dbProxy?.up();
  await processor?.stop();
  for (const i of inspectors) await i.stop().catch(() => undefined);
  await sql?.end({ timeout: 1 });
  await dbProxy?.stop();
  await db?.drop();
});

const api = (path: string, init: RequestInit = {}) =>
  fetch(`${main.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(init.body ? { 'content-type': 'application/json' } : {}),
    },
  });
const command = (imei: string, kind: string) =>
  api(`/api/modems/${imei}/commands`, { method: 'POST', body: JSON.stringify({ kind }) });

/** A GET with any Host header (fetch does not let a test choose it). */
function rawGet(
  inspector: Inspector,
  path: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  const { host, port } = inspector.address;
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host, port, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A raw connection: what it received, and when (ms after it opened) the server closed it. */
function open(inspector: Inspector): { socket: Socket; received: () => string; closed: Promise<number> } {
  const { host, port } = inspector.address;
  const t0 = Date.now();
  const socket = connect(port, host);
  let data = '';
  socket.setEncoding('utf8');
  socket.on('data', (d: string) => (data += d));
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - t0)));
  return { socket, received: () => data, closed };
}

/** Writes `chunks` one per `everyMs` until the socket closes (a slowloris client). */
function trickle(socket: Socket, chunks: () => string, everyMs: number): NodeJS.Timeout {
  const timer = setInterval(() => {
    if (socket.destroyed || socket.writableEnded) clearInterval(timer);
    else socket.write(chunks());
  }, everyMs);
  socket.on('close', () => clearInterval(timer));
  return timer;
}

describe('commands that cannot be jammed', () => {
  it('a rotation link in a loop (GET and POST) delays an operator command by one rotation at most', async () => {
    const link = (await (await api(`/api/modems/${A}/rotation-link`, { method: 'POST' })).json()) as {
      path: string;
      methods: string[];
      warning: string;
    };
    expect(link.methods).toEqual(['POST', 'GET']);
    expect(link.warning).toMatch(/previewers/);
    let looping = true;
    const answers: { status: number; id?: number }[] = [];
    const maxPending: number[] = [];
    const loop = async (method: string): Promise<void> => {
      while (looping) {
        const res = await fetch(`${main.url}${link.path}`, { method });
        const body = (await res.json()) as { id?: number };
        answers.push({ status: res.status, ...(body.id !== undefined ? { id: body.id } : {}) });
        const [row] = await db.sql<{ n: number }[]>`
          select count(*)::int as n from modem_commands where imei = ${A} and kind = 'rotate' and status = 'pending'`;
        maxPending.push(row?.n ?? 0);
      }
    };
    const loops = [loop('GET'), loop('POST'), loop('GET'), loop('POST')];
    try {
      // a rotation has just finished and the link has queued the next one, held by the minimum interval
      const pendingRotate = await until(
        async () => {
          const rows = await db.sql<{ id: string; status: string }[]>`
            select id, status from modem_commands where imei = ${A} and kind = 'rotate' order by id`;
          const done = rows.filter((r) => r.status === 'done').length;
          const pending = rows.find((r) => r.status === 'pending');
          return done >= 1 && !rows.some((r) => r.status === 'running') && pending && Number(pending.id);
        },
        { timeoutMs: 20_000, message: 'a finished rotation and a pending one' },
      );
      // the operator's rotate is the pending one; the operator's budget is not the link's
      const rotate = await command(A, 'rotate');
      expect(rotate.status).toBe(202);
      expect(((await rotate.json()) as { id: number }).id).toBe(pendingRotate);
      const t0 = Date.now();
      const disable = await command(A, 'disable');
      expect(disable.status).toBe(202);
      const { id } = (await disable.json()) as { id: number };
      await until(async () => (await store.command(id))?.status === 'done', { timeoutMs: 10_000 });
      const waitedMs = (started.get(id) ?? Infinity) - t0;
      // before: it waited behind the held rotate for the whole minimum interval (about 5 s)
      expect(waitedMs).toBeLessThan(ROTATION_MS + 1_000);
      expect((await store.command(pendingRotate))?.status).toBe('pending');

      // while a rotation runs, an operator command waits for that one rotation and no other
      await until(async () => (await store.command(pendingRotate))?.status === 'running', {
        timeoutMs: 15_000,
        intervalMs: 10,
        message: 'the held rotate running',
      });
      const t1 = Date.now();
      const enable = await command(A, 'enable');
      expect(enable.status).toBe(202);
      const enableId = ((await enable.json()) as { id: number }).id;
      await until(async () => (await store.command(enableId))?.status === 'done', { timeoutMs: 10_000 });
      expect((started.get(enableId) ?? Infinity) - t1).toBeLessThan(ROTATION_MS + 1_000);
      const [after] = await db.sql<{ n: number }[]>`
        select count(*)::int as n from modem_commands
        where imei = ${A} and kind = 'rotate' and claimed_at between ${new Date(t1)} and ${new Date(started.get(enableId) ?? 0)}`;
      expect(after?.n).toBe(0); // no rotate of the link got in between
    } finally {
      looping = false;
      await Promise.all(loops);
    }
    expect(answers.length).toBeGreaterThan(20);
    expect(new Set(answers.map((a) => a.status))).toEqual(new Set([202, 429]));
    expect(Math.max(...maxPending)).toBe(1);
  }, 60_000);

  it('past the queue cap a command gets 429 queue_full and nothing is written', async () => {
    for (const kind of ['reset', 'disable', 'enable']) expect((await command(B, kind)).status).toBe(202);
    const before = await db.sql`select count(*)::int as n from modem_commands where imei = ${B}`;
    const full = await command(B, 'reset');
    expect(full.status).toBe(429);
    const refusal = (await full.json()) as { error: string; message: string };
    expect(refusal.error).toBe('queue_full');
    expect(refusal.message).toMatch(/limit 3/);
    expect((await command(B, 'rotate')).status).toBe(429);
    const after = await db.sql`select count(*)::int as n from modem_commands where imei = ${B}`;
    expect(after[0]?.['n']).toBe(before[0]?.['n']);
  });
});

describe('an HTTP server that cannot be held open', () => {
  it('headers trickled, a body trickled, a silent connection, an idle keep-alive: closed within their timeouts', async () => {
    const headers = open(tight);
    headers.socket.write('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    let i = 0;
    trickle(headers.socket, () => `X-Slow-${i++}: 1\r\n`, 200);

    const body = open(tight);
    body.socket.write(
      `POST /rotate/${'a'.repeat(43)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{`,
    );
    trickle(body.socket, () => ' ', 200);

    const silent = open(tight);

    const idle = open(tight);
    idle.socket.write('GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');

    const [h, b, s, k] = await Promise.all([headers.closed, body.closed, silent.closed, idle.closed]);
    // headers 1 s, request 1.5 s, keep-alive 0.5 s; node checks the first two every 0.5 s
    expect(h).toBeLessThan(1_000 + 500 + 700);
    expect(b).toBeLessThan(1_500 + 500 + 700);
    expect(s).toBeLessThan(1_000 + 500 + 700);
    // keep-alive: node adds its keepAliveTimeoutBuffer (1 s) to the socket's timeout
    expect(k).toBeLessThan(500 + 1_000 + 700);
    expect(headers.received()).toMatch(/^HTTP\/1\.1 408/);
    expect(idle.received()).toMatch(/^HTTP\/1\.1 200/);
  }, 20_000);

  it("a rotation link's ?wait= outlasts the request and idle timeouts (its answer is slow, not its request)", async () => {
    const short = await startInspector({
      httpHeadersTimeoutMs: 500,
      httpRequestTimeoutMs: 1_000,
      httpIdleTimeoutMs: 1_000,
    });
    const link = (await (await api(`/api/modems/${C}/rotation-link`, { method: 'POST' })).json()) as {
      path: string;
    };
    const t0 = Date.now();
    const res = await fetch(`${short.url}${link.path}?wait=3`, { method: 'POST' });
    expect(res.status).toBe(202); // C belongs to another host: its rotate stays pending
    expect(await res.json()).toMatchObject({ status: 'pending' });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_900);
  }, 20_000);

  it('maxConnections: a connection past the limit is closed at once; the server serves again afterwards', async () => {
    const held = Array.from({ length: 6 }, () => open(tight));
    for (const c of held) c.socket.write('GET /live HTTP/1.1\r\n'); // unfinished: held until the timeout
    await new Promise((r) => setTimeout(r, 200));
    const extra = open(tight);
    extra.socket.write('GET /live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    expect(await extra.closed).toBeLessThan(1_000);
    expect(extra.received()).toBe('');
    await Promise.all(held.map((c) => c.closed));
    expect((await rawGet(tight, '/live')).status).toBe(200);
  }, 20_000);

  it('a Host that does not name this inspector is refused with 421 (HTTP and WebSocket)', async () => {
    const evil = await rawGet(main, '/live', { host: 'rebind.attacker.example:8080' });
    expect(evil.status).toBe(421);
    expect(JSON.parse(evil.body)).toMatchObject({ error: 'host_not_allowed' });
    expect((JSON.parse(evil.body) as { message: string }).message).toMatch(/allowedHosts/);
    const authed = await rawGet(main, '/api/modems', {
      host: 'evil.example',
      authorization: `Bearer ${TOKEN}`,
    });
    expect(authed.status).toBe(421);
    for (const host of [
      '127.0.0.1',
      `127.0.0.1:${main.address.port}`,
      'localhost:1',
      '127.0.0.5',
      LAN,
      'a.farm.example:80',
    ])
      expect((await rawGet(main, '/live', { host })).status, host).toBe(200);
    expect((await rawGet(main, '/live', { host: 'farm.example.evil' })).status).toBe(421);
    expect((await rawGet(tight, '/live', { host: LAN })).status).toBe(421); // not configured there
    const ws = open(main);
    ws.socket.write(
      `GET /ws?token=${TOKEN} HTTP/1.1\r\nHost: evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
    await ws.closed;
    expect(ws.received()).toMatch(/^HTTP\/1\.1 421/);
  });

  it('unauthenticated routes are limited per client address (429), the token-holder API is not', async () => {
    const limitedInspector = await startInspector({ publicBurst: 5, publicRefillMs: 60_000 });
    const statuses: number[] = [];
    for (const path of ['/health', '/metrics', '/ready', '/health', '/metrics', '/health', '/ready'])
      statuses.push((await rawGet(limitedInspector, path)).status);
    expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429]);
    const limited = await rawGet(limitedInspector, `/rotate/${'b'.repeat(43)}`);
    expect(limited.status).toBe(429);
    expect(JSON.parse(limited.body)).toMatchObject({ error: 'rate_limited' });
    const api = await rawGet(limitedInspector, '/api/modems', { authorization: `Bearer ${TOKEN}` });
    expect(api.status).toBe(200);
  });

  it('/metrics is rendered once per cache window, however many scrapes', async () => {
    const before = main.metricsRenders;
    const texts = await Promise.all([1, 2, 3].map(async () => (await fetch(`${main.url}/metrics`)).text()));
    const again = await (await fetch(`${main.url}/metrics`)).text();
    expect(main.metricsRenders - before).toBe(1);
    expect(new Set([...texts, again]).size).toBe(1);
    expect(again).toMatch(/^modemfleet_database_up 1$/m);
    await new Promise((r) => setTimeout(r, 1_600)); // the default window is 1.5 s
    await fetch(`${main.url}/metrics`);
    expect(main.metricsRenders - before).toBe(2);
  });

  it('/health and /ready show the database error text only to the token holder', async () => {
    dbProxy.cut();
    try {
      const bare = await until(
        async () => {
          const r = await rawGet(main, '/health');
          return (JSON.parse(r.body) as { status: string }).status === 'degraded' && r;
        },
        { timeoutMs: 10_000, message: '/health degraded' },
      );
      const health = JSON.parse(bare.body) as { checks: { database: Record<string, unknown> } };
      expect(health.checks.database).toEqual({ ok: false });
      const ready = await rawGet(main, '/ready');
      expect(ready.status).toBe(503);
      const readyBody = JSON.parse(ready.body) as { checks: { database: Record<string, unknown> } };
      expect(readyBody.checks.database).toEqual({ ok: false });
      const withToken = JSON.parse(
        (await rawGet(main, '/health', { authorization: `Bearer ${TOKEN}` })).body,
      ) as { checks: { database: { error?: string } } };
      expect(withToken.checks.database.error).toEqual(expect.any(String));
    } finally {
      dbProxy.up();
    }
  });
});
