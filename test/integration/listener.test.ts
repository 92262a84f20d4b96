import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TcpProxy } from '../helpers/tcpProxy.js';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';
import { freePort } from '../../src/util/ports.js';
import { openSql } from '../../src/store/database.js';
import { migrate } from '../../src/store/migrate.js';
import { Store } from '../../src/store/store.js';
import type { Notification } from '../../src/store/listener.js';
import { CHANNELS, type TransitionRecord } from '../../src/store/types.js';
import { until } from '../helpers/until.js';

const IMEI = '356000000000001';

describe('NOTIFY payloads', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('every channel carries a small JSON payload without credentials', async () => {
    const store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-a' });
    const got: Notification[] = [];
    await store.registerHost();
    const listener = await store.listen(CHANNELS, (n) => got.push(n));
    try {
      await store.upsertModem({ imei: IMEI, iccid: '8901260852290847433' });
      await store.allocate(IMEI);
      await store.appendTransitions([
        { imei: IMEI, seq: 1, from: null, to: 'detecting', event: 'device.added', at: new Date() },
        {
          imei: IMEI,
          seq: 2,
          from: 'detecting',
          to: 'online.serving',
          event: 'ready',
          at: new Date(),
          wanIp: '10.64.1.2',
        },
      ]);
      await store.recordHealth([{ imei: IMEI, rssi: -70, operator: 'Vodafone', technology: 'LTE' }]);
      await store.raiseAlert({ imei: IMEI, kind: 'sim_swap', severity: 'warning', message: 'ICCID changed' });
      const id = await store.insertCommand(IMEI, 'rotate', 'test');
      await store.claimCommands();
      await db.sql`update hosts set stopped_at = now() where id = 'farm-a'`;
      await until(
        () => got.some((n) => n.channel === 'system_events' && n.payload['type'] === 'host_stopped'),
        { timeoutMs: 5000, intervalMs: 25, message: 'host_stopped' },
      );

      const of = (channel: string): Record<string, unknown>[] =>
        got.filter((n) => n.channel === channel).map((n) => n.payload);
      // one notification per stored batch, its transitions in seq order
      expect(of('modem_status_change')).toEqual([
        {
          transitions: [
            expect.objectContaining({
              imei: IMEI,
              seq: 1,
              from: null,
              to: 'detecting',
              event: 'device.added',
            }),
            expect.objectContaining({
              imei: IMEI,
              seq: 2,
              from: 'detecting',
              to: 'online.serving',
              event: 'ready',
            }),
          ],
        },
      ]);
      expect(of('modem_health')[0]).toMatchObject({
        imei: IMEI,
        rssi: -70,
        operator: 'Vodafone',
        technology: 'LTE',
      });
      expect(of('modem_config_change')[0]).toMatchObject({ imei: IMEI, changed: ['created'] });
      expect(
        of('modem_config_change').some(
          (p) => (p['changed'] as string[]).includes('wan_ip') && p['wanIp'] === '10.64.1.2',
        ),
      ).toBe(true);
      // a public address seen through the port (sql/0009): the inspector refreshes the row live
      await store.recordAddress(IMEI, '203.0.113.7', '10.64.1.2');
      await until(
        () =>
          got.some(
            (n) =>
              n.channel === 'modem_config_change' && (n.payload['changed'] as string[]).includes('public_ip'),
          ),
        { timeoutMs: 5000, intervalMs: 25, message: 'public_ip change notified' },
      );
      expect(of('modem_alerts')[0]).toMatchObject({
        imei: IMEI,
        kind: 'sim_swap',
        severity: 'warning',
        resolved: false,
      });
      expect(of('modem_commands')).toEqual([
        { id, imei: IMEI, kind: 'rotate', status: 'pending' },
        { id, imei: IMEI, kind: 'rotate', status: 'running' },
      ]);
      expect(of('system_events').map((p) => p['type'])).toEqual(['host_stopped']);
      for (const n of got) {
        const text = JSON.stringify(n.payload);
        expect(text.length).toBeLessThan(1000);
        expect(text).not.toMatch(/password|proxy_user/i);
      }
    } finally {
      await listener.stop();
    }
  });

  it('a large batch is split into notifications below 8000 bytes, every transition once, in order', async () => {
    const store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-a' });
    const got: Notification[] = [];
    const listener = await store.listen(['modem_status_change'], (n) => got.push(n));
    try {
      // 300 modems x 4 transitions in one append, with the longest state paths the journal takes
      const long = `online.${'x'.repeat(121)}`;
      const batch = Array.from({ length: 1200 }, (_, i) => {
        const imei = String(357000000000000 + (i % 300));
        const seq = Math.floor(i / 300) + 1;
        return { imei, seq, from: seq === 1 ? null : long, to: long, event: 'e'.repeat(64), at: new Date() };
      });
      await store.appendTransitions(batch);
      await until(() => got.reduce((n, x) => n + (x.payload['transitions'] as unknown[]).length, 0) >= 1200, {
        timeoutMs: 5000,
        intervalMs: 25,
        message: 'every transition',
      });
      const sizes = got.map((n) => Buffer.byteLength(JSON.stringify(n.payload)));
      expect(got.length).toBeGreaterThan(20);
      expect(Math.max(...sizes)).toBeLessThan(8000);
      const all = got.flatMap((n) => n.payload['transitions'] as { imei: string; seq: number }[]);
      expect(all.length).toBe(1200);
      const byModem = new Map<string, number[]>();
      for (const t of all) byModem.set(t.imei, [...(byModem.get(t.imei) ?? []), t.seq]);
      expect(byModem.size).toBe(300);
      for (const seqs of byModem.values()) expect(seqs).toEqual([1, 2, 3, 4]);
    } finally {
      await listener.stop();
    }
  });

  it('each stored row is notified once: replays, a row written by hand, an append that gave way to it', async () => {
    const store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-a' });
    const got: Notification[] = [];
    const listener = await store.listen(['modem_status_change'], (n) => got.push(n));
    const imei = '357100000000001';
    const row = (seq: number): TransitionRecord => ({
      imei,
      seq,
      from: seq === 1 ? null : 'online.serving',
      to: 'online.serving',
      event: `e${seq}`,
      at: new Date(),
    });
    try {
      await store.appendTransitions([row(1), row(2)]);
      await store.appendTransitions([row(1), row(2), row(3)]); // a replay with one new row
      await db.sql`insert into modem_transitions (imei, seq, to_state, event, at)
        values (${imei}, 4, 'online', 'by-hand', now())`;
      await store.appendTransitions([row(4), row(5)]); // 4 exists: the usual path gives way
      await store.appendTransitions([row(6)]);
      const seqs = (): number[] =>
        got.flatMap((n) => (n.payload['transitions'] as { seq: number }[]).map((t) => t.seq));
      await until(() => seqs().includes(6), { timeoutMs: 5000, message: 'seq 6' });
      // 4 by its own insert; 5 once, although the first attempt of that append was undone
      expect(seqs()).toEqual([1, 2, 3, 4, 5, 6]);
    } finally {
      await listener.stop();
    }
  });

  it('a malformed or oversized payload is counted and ignored; the listener keeps working', async () => {
    const store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-a' });
    const got: Notification[] = [];
    const listener = await store.listen(['modem_commands'], (n) => got.push(n));
    try {
      await db.sql`select pg_notify('modem_commands', 'not json {')`;
      await db.sql`select pg_notify('modem_commands', '[1,2,3]')`;
      await db.sql`select pg_notify('modem_commands', ${JSON.stringify({ pad: 'x'.repeat(7900) })})`;
      await db.sql`select pg_notify('modem_commands', '{"id":1}')`;
      await until(() => got.length === 1 && listener.stats.malformed === 3, {
        timeoutMs: 5000,
        intervalMs: 25,
        message: 'the valid notification',
      });
      expect(listener.stats.malformed).toBe(3);
      expect(got[0]?.payload).toEqual({ id: 1 });
    } finally {
      await listener.stop();
    }
  });

  it('a catch-up that never answers is abandoned: later catch-ups (notifications, polls) run again', async () => {
    const store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-a' });
    let calls = 0;
    // the first catch-up hangs (a query on a connection whose server died); the others answer
    const onCatchUp = (): Promise<void> =>
      ++calls === 1 ? new Promise<void>(() => undefined) : Promise.resolve();
    const listener = await store.listen(['modem_commands'], () => undefined, {
      onCatchUp,
      catchUpTimeoutMs: 300,
    });
    try {
      expect(listener.stats.catchUpErrors).toBe(1);
      const before = calls;
      await listener.catchUp();
      expect(calls).toBe(before + 1);
      await db.sql`select pg_notify('modem_commands', '{"id":1}')`;
      await listener.catchUp();
      expect(calls).toBe(before + 2);
    } finally {
      await listener.stop();
    }
  });
});

describe('listener across a PostgreSQL restart and a half-open connection', () => {
  let dir: string;
  let cluster: EmbeddedCluster;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mf-restart-'));
    cluster = new EmbeddedCluster({ dir, port: await freePort(), settings: { fsync: 'off' } });
    await cluster.start();
    const sql = openSql(cluster.url, { max: 1 });
    await migrate(sql);
    await sql.end();
  });
  afterAll(async () => {
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('claims every command inserted while the listener was away exactly once after reconnect', async () => {
    const sql = openSql(cluster.url, { max: 4 });
    const store = new Store({ sql, url: cluster.url, hostId: 'farm-r' });
    await store.registerHost();
    const imeis = Array.from({ length: 5 }, (_, i) => `35700000000000${i}`);
    for (const imei of imeis) await store.upsertModem({ imei });

    const claimed: number[] = [];
    const drain = async (): Promise<void> => {
      for (;;) {
        const batch = await store.claimCommands();
        if (batch.length === 0) return;
        for (const c of batch) {
          claimed.push(c.id);
          await store.finishCommand(c.id, true);
        }
      }
    };
    const listener = await store.listen(['modem_commands'], () => void listener.catchUp(), {
      onCatchUp: drain,
      heartbeatIntervalMs: 200,
      heartbeatTimeoutMs: 2000,
    });
    try {
      const before = await store.insertCommand(imeis[0] ?? '', 'rotate', 'test');
      await until(() => claimed.includes(before), {
        timeoutMs: 5000,
        intervalMs: 25,
        message: 'the first command',
      });

      await cluster.stop();
      // commands inserted while the supervisor's listener is away (another client, after the restart)
      await cluster.start();
      const writer = openSql(cluster.url, { max: 1 });
      const inserted: number[] = [];
      for (let round = 0; round < 3; round++) {
        for (const imei of imeis) {
          const [row] =
            await writer`insert into modem_commands (imei, kind) values (${imei}, 'reset') returning id`;
          inserted.push(Number(row?.['id']));
        }
      }
      await writer.end();
      await until(() => inserted.every((id) => claimed.includes(id)), {
        timeoutMs: 20_000,
        intervalMs: 25,
        message: 'all commands claimed',
      });
      await new Promise((r) => setTimeout(r, 500));
      expect(claimed.filter((id) => inserted.includes(id)).sort((a, b) => a - b)).toEqual(
        inserted.sort((a, b) => a - b),
      );
      expect(new Set(claimed).size).toBe(claimed.length);
      const statuses = await sql`select status, count(*)::int as n from modem_commands group by status`;
      expect(statuses).toEqual([{ status: 'done', n: inserted.length + 1 }]);
      expect(listener.stats.reconnects + listener.stats.rebuilds).toBeGreaterThanOrEqual(1);
    } finally {
      await listener.stop();
      await sql.end();
    }
  });

  it('notices a half-open listen connection within the heartbeat timeout and rebuilds it', async () => {
    const proxy = new TcpProxy(cluster.port);
    await proxy.start();
    const viaProxy = cluster.url.replace(`:${cluster.port}/`, `:${proxy.port}/`);
    const sql = openSql(cluster.url, { max: 2 });
    const store = new Store({ sql, url: viaProxy, hostId: 'farm-h' });
    await store.registerHost();
    await store.upsertModem({ imei: IMEI });
    const got: number[] = [];
    const listener = await store.listen(['modem_commands'], (n) => got.push(Number(n.payload['id'])), {
      heartbeatIntervalMs: 200,
      heartbeatTimeoutMs: 1500,
    });
    try {
      const listensBefore = listener.stats.listens;
      proxy.freeze();
      const frozenAt = Date.now();
      const id = await store.insertCommand(IMEI, 'rotate', 'test'); // lost on the frozen connection
      await until(() => listener.stats.rebuilds > 0, {
        timeoutMs: 10_000,
        intervalMs: 25,
        message: 'a rebuild',
      });
      const noticedMs = Date.now() - frozenAt;
      expect(noticedMs).toBeLessThan(5000);
      expect(listener.stats.heartbeatsMissed).toBeGreaterThanOrEqual(1);
      // a notification sent before the new connection listens is lost by design (the catch-up
      // finds it): wait until it listens again
      await until(() => listener.stats.listens > listensBefore, {
        timeoutMs: 10_000,
        intervalMs: 25,
        message: 'listening again',
      });
      const id2 = await store.insertCommand(IMEI, 'reset', 'test');
      await until(() => got.includes(id2), {
        timeoutMs: 10_000,
        intervalMs: 25,
        message: 'a notification on the rebuilt connection',
      });
      expect(got).not.toContain(id);
    } finally {
      await listener.stop();
      await sql.end();
      await proxy.stop();
    }
  });
});
