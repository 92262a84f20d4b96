import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { CommandProcessor } from '../../src/fleet/commandProcessor.js';
import { Store } from '../../src/store/store.js';
import type { Command } from '../../src/store/types.js';
import { until } from '../helpers/until.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const soon = { timeoutMs: 10_000, intervalMs: 25 };

describe('command processor', () => {
  it('runs each command once, operator commands in order per modem, and writes the result; other hosts are left alone', async () => {
    const store = new Store({ sql: db.sql, url: db.url, hostId: 'host-a' });
    const other = new Store({ sql: db.sql, url: db.url, hostId: 'host-b' });
    await store.registerHost();
    await other.registerHost();
    const mine = ['365000000000001', '365000000000002', '365000000000003'];
    for (const imei of mine) await store.upsertModem({ imei });
    await other.upsertModem({ imei: '365000000000009' });
    // queued before the processor starts: found by the first catch-up
    const early = await store.insertCommand(mine[0] ?? '', 'disable', 'test');
    const foreign = await other.insertCommand('365000000000009', 'rotate', 'test');

    const seen: Command[] = [];
    const processor = new CommandProcessor({
      store,
      execute: async (c) => {
        seen.push(c);
        await new Promise((r) => setTimeout(r, 20));
        return c.kind === 'reset'
          ? { ok: false, result: { error: 'at_timeout' } }
          : { ok: true, result: { done: c.kind } };
      },
      heartbeatIntervalMs: 200,
    });
    await processor.start();
    try {
      const ids: number[] = [early];
      for (const imei of mine) {
        ids.push(await store.insertCommand(imei, 'rotate', 'test'));
        ids.push(await store.insertCommand(imei, 'reset', 'test'));
      }
      await until(() => processor.stats.finished + processor.stats.failed === ids.length, soon);
      await until(
        async () =>
          (
            await db.sql`select 1 from modem_commands where status in ('pending', 'running') and id <> ${foreign}`
          ).length === 0,
        soon,
      );
      expect(seen.map((c) => c.id).sort((a, b) => a - b)).toEqual(ids.sort((a, b) => a - b));
      for (const imei of mine) {
        // operator commands keep their order; the modem's one rotate runs when none is pending
        const order = seen.filter((c) => c.imei === imei && c.kind !== 'rotate').map((c) => c.id);
        expect(order).toEqual([...order].sort((a, b) => a - b));
      }
      const rows = await db.sql<{ kind: string; status: string; result: unknown }[]>`
        select kind, status, result from modem_commands where id <> ${foreign} order by id`;
      for (const r of rows) {
        expect(r.status).toBe(r.kind === 'reset' ? 'failed' : 'done');
        expect(r.result).toEqual(r.kind === 'reset' ? { error: 'at_timeout' } : { done: r.kind });
      }
      expect((await store.command(foreign))?.status).toBe('pending');
    } finally {
      await processor.stop();
    }
  });

  it('a stale listing of running commands (slow during an outage) never runs a finished command again', async () => {
    // The adoption of commands whose claim reply was lost reads what runs in our name; when that
    // read is slow, a command can finish here meanwhile. Delay the listing until it has.
    let finished: () => void = () => undefined;
    const done = new Promise<void>((r) => (finished = r));
    class SlowStore extends Store {
      override async runningCommands(): Promise<Command[]> {
        const listed = await super.runningCommands();
        if (listed.length > 0) await done;
        return listed;
      }
    }
    const store = new SlowStore({ sql: db.sql, url: db.url, hostId: 'host-c' });
    await store.registerHost();
    await store.upsertModem({ imei: '365000000000031' });
    const runs = new Map<number, number>();
    const processor = new CommandProcessor({
      store,
      execute: async (c) => {
        runs.set(c.id, (runs.get(c.id) ?? 0) + 1);
        await new Promise((r) => setTimeout(r, 100));
        return { ok: true, result: {} };
      },
    });
    await processor.start();
    try {
      const id = await store.insertCommand('365000000000031', 'rotate', 'test');
      await until(async () => (await store.command(id))?.status === 'done', soon);
      finished(); // the stale listing (the command still running) arrives now
      await new Promise((r) => setTimeout(r, 300));
      processor.wake();
      await new Promise((r) => setTimeout(r, 300));
      expect(runs.get(id)).toBe(1);
    } finally {
      await processor.stop();
    }
  });
});
