import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

// The command queue's rules (issue 18, item 3), held by the database and the insert code: one
// pending rotate per modem whoever inserts it, a cap on pending commands, operator commands first.

let db: TestDatabase;
let store: Store;
let n = 0;
const newModem = async (): Promise<string> => {
  const imei = `36600000000${String(1000 + n++)}`;
  await store.upsertModem({ imei });
  return imei;
};
const pending = async (imei: string) =>
  db.sql<{ id: string; kind: string }[]>`
    select id, kind from modem_commands where imei = ${imei} and status = 'pending' order by id`;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-q', commandQueueMax: 3 });
  await store.registerHost();
});
afterAll(async () => {
  await db?.drop();
});

describe('one pending rotate per modem', () => {
  it('concurrent rotates from the API, links and schedules get one id and make one row', async () => {
    const imei = await newModem();
    const by = ['api:127.0.0.1', 'rotation-link', 'schedule', 'cli:root'];
    const ids = await Promise.all(
      Array.from({ length: 24 }, (_, i) => store.insertCommand(imei, 'rotate', by[i % by.length] ?? 'x')),
    );
    expect(new Set(ids).size).toBe(1);
    expect((await pending(imei)).map((r) => Number(r.id))).toEqual([ids[0]]);
  });

  it('a raw SQL insert of a second pending rotate is refused by the database; the API returns the raw one', async () => {
    const imei = await newModem();
    const [raw] = await db.sql<{ id: string }[]>`
      insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'sql') returning id`;
    await expect(
      db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'sql')`,
    ).rejects.toMatchObject({ code: '23505', constraint_name: 'modem_commands_one_pending_rotate' });
    expect(await store.insertCommand(imei, 'rotate', 'rotation-link')).toBe(Number(raw?.id));
    // concurrent raw inserts beside the pending one: every one is refused
    const results = await Promise.allSettled(
      Array.from(
        { length: 8 },
        () => db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'sql')`,
      ),
    );
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    expect(await pending(imei)).toHaveLength(1);
  });

  it('once the pending rotate is running, the next request queues a new one (one running, one pending)', async () => {
    const imei = await newModem();
    const first = await store.insertCommand(imei, 'rotate', 'test');
    expect((await store.claimCommands()).map((c) => c.id)).toContain(first);
    const second = await store.insertCommand(imei, 'rotate', 'test');
    expect(second).not.toBe(first);
    expect(await store.insertCommand(imei, 'rotate', 'test')).toBe(second);
    await store.finishCommand(first, true);
  });
});

describe('migration 0011', () => {
  it('fails the later pending rotates of a modem left by an earlier version, then holds one per modem', async () => {
    const imei = await newModem();
    const migration = await readFile(
      new URL('../../sql/0011_one_pending_rotate.sql', import.meta.url),
      'utf8',
    );
    const ids: number[] = [];
    await db.sql.begin(async (tx) => {
      // the state before 0011: nothing kept two pending rotates of a modem apart (raw SQL)
      await tx`drop index modem_commands_one_pending_rotate`;
      for (let i = 0; i < 3; i++) {
        const [row] = await tx<{ id: string }[]>`
          insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'old') returning id`;
        ids.push(Number(row?.id));
      }
      await tx.unsafe(migration);
    });
    const rows = await db.sql<{ id: string; status: string; result: { error?: string } | null }[]>`
      select id, status, result from modem_commands where imei = ${imei} order by id`;
    expect(rows.map((r) => [Number(r.id), r.status, r.result?.error ?? null])).toEqual([
      [ids[0], 'pending', null],
      [ids[1], 'failed', 'duplicate'],
      [ids[2], 'failed', 'duplicate'],
    ]);
    await expect(
      db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'new')`,
    ).rejects.toMatchObject({ code: '23505', constraint_name: 'modem_commands_one_pending_rotate' });
  });
});

describe('the queue cap (policy commandQueueMax)', () => {
  it('past the cap a command is refused with queue_full and nothing is written; a pending rotate is still shared', async () => {
    const imei = await newModem();
    await store.insertCommand(imei, 'disable', 'test');
    await store.insertCommand(imei, 'enable', 'test');
    const rotate = await store.insertCommand(imei, 'rotate', 'test');
    const before = await db.sql`select count(*)::int as n from modem_commands where imei = ${imei}`;
    await expect(store.insertCommand(imei, 'reset', 'test')).rejects.toMatchObject({ code: 'queue_full' });
    await expect(store.insertCommand(imei, 'disable', 'test')).rejects.toThrow(/limit 3/);
    // asking for the rotation that is already queued adds nothing: the pending id, not queue_full
    expect(await store.insertCommand(imei, 'rotate', 'test')).toBe(rotate);
    const after = await db.sql`select count(*)::int as n from modem_commands where imei = ${imei}`;
    expect(after[0]?.['n']).toBe(before[0]?.['n']);
    // other modems are not affected
    const other = await newModem();
    expect(await store.insertCommand(other, 'reset', 'test')).toBeGreaterThan(0);
  });
});

describe('operator commands before queued rotations', () => {
  it('a rotate held back by the minimum interval does not hold a disable queued behind it', async () => {
    const imei = await newModem();
    const minIntervalMs = 60_000;
    const first = await store.insertCommand(imei, 'rotate', 'test');
    const mine = async () =>
      (await store.claimCommands(100, minIntervalMs)).filter((c) => c.imei === imei).map((c) => c.id);
    expect(await mine()).toEqual([first]);
    await store.finishCommand(first, true);
    const waiting = await store.insertCommand(imei, 'rotate', 'rotation-link');
    const disable = await store.insertCommand(imei, 'disable', 'api:operator');
    expect(await mine()).toEqual([disable]);
    expect(await store.rotationWaitMs(minIntervalMs)).toBeGreaterThan(50_000);
    await store.finishCommand(disable, true);
    // still within the interval: the rotate waits, nothing else of the modem is claimed
    expect(await mine()).toEqual([]);
    expect((await store.command(waiting))?.status).toBe('pending');
  });

  it('a rotate queued first runs after the operator commands queued later, which keep their order', async () => {
    const imei = await newModem();
    const rotate = await store.insertCommand(imei, 'rotate', 'rotation-link');
    const reset = await store.insertCommand(imei, 'reset', 'api:operator');
    const disable = await store.insertCommand(imei, 'disable', 'api:operator');
    const order: number[] = [];
    for (let i = 0; i < 5; i++) {
      const claimed = (await store.claimCommands()).filter((c) => c.imei === imei);
      expect(claimed.length).toBeLessThanOrEqual(1); // one running per modem
      for (const c of claimed) {
        order.push(c.id);
        await store.finishCommand(c.id, true);
      }
    }
    expect(order).toEqual([reset, disable, rotate]);
  });

  it('a rotate waits while its modem comes back from a reset (rechecked every second), then runs', async () => {
    const imei = await newModem();
    // a journaled modem in the middle of an operator's reset (the row as the journal leaves it)
    await db.sql`update modems set state = 'resetting', seq = 1 where imei = ${imei}`;
    const rotate = await store.insertCommand(imei, 'rotate', 'rotation-link');
    const mine = async () => (await store.claimCommands()).filter((c) => c.imei === imei).map((c) => c.id);
    expect(await mine()).toEqual([]);
    expect(await store.rotationWaitMs(0)).toBe(1_000);
    await db.sql`update modems set state = 'detecting' where imei = ${imei}`;
    expect(await mine()).toEqual([]);
    await db.sql`update modems set state = 'online' where imei = ${imei}`;
    expect(await mine()).toEqual([rotate]);
    await store.finishCommand(rotate, true);
    // a disabled modem's rotate is claimed at once (and refused by the modem: not_online)
    await db.sql`update modems set state = 'disabled' where imei = ${imei}`;
    const next = await store.insertCommand(imei, 'rotate', 'rotation-link');
    expect(await mine()).toEqual([next]);
    await store.finishCommand(next, false, { error: 'not_online' });
  });
});
