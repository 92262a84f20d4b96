import { afterAll, beforeAll, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { HealthWriter } from '../../src/fleet/healthWriter.js';
import { Store } from '../../src/store/store.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

it('writes samples in batches, keeps them while the database is away, and prunes old ones', async () => {
  const store = new Store({ sql: db.sql, url: db.url, hostId: 'h' });
  await store.registerHost();
  await store.upsertModem({ imei: '366000000000001' });
  let fail = true;
  const calls: number[] = [];
  const writer = new HealthWriter({
    sink: {
      recordHealth: async (s) => {
        calls.push(s.length);
        if (fail) throw Object.assign(new Error('down'), { code: 'ECONNREFUSED' });
        await store.recordHealth(s);
      },
      pruneHealthOlderThan: (s) => store.pruneHealthOlderThan(s),
    },
    retentionSeconds: 86_400,
    maxBuffered: 150,
  });
  for (let i = 0; i < 200; i++)
    writer.add({
      imei: '366000000000001',
      rssi: -60 - (i % 40),
      at: new Date(Date.now() - (i < 10 ? 2 * 86_400_000 : 0)),
    });
  await writer.flush();
  expect(writer.stats).toMatchObject({ written: 0, dropped: 50 });
  fail = false;
  await writer.flush();
  expect(calls).toEqual([150, 150]);
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from modem_health`;
  expect(row?.n).toBe(150);
  // the oldest 50 (including the 10 two-day-old samples) were dropped while buffering; nothing is old now
  expect(await writer.prune()).toBe(0);
  await db.sql`update modem_health set at = now() - interval '3 days' where rssi < -95`;
  expect(await writer.prune()).toBeGreaterThan(0);
  await writer.stop();
});
