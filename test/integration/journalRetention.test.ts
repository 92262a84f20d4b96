import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { JournalRetention } from '../../src/fleet/journalRetention.js';
import { openSql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';
import type { TransitionRecord } from '../../src/store/types.js';

let db: TestDatabase;
let store: Store;
beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-r' });
  await store.registerHost();
});
afterAll(async () => {
  await db?.drop();
});

const DAY = 86_400_000;
const imei = (n: number): string => String(358000000000000 + n);
const row = (i: string, seq: number, ageDays: number): TransitionRecord => ({
  imei: i,
  seq,
  from: seq === 1 ? null : 'online.serving',
  to: seq % 2 ? 'online.rotating' : 'online.serving',
  event: `e${seq}`,
  at: new Date(Date.now() - ageDays * DAY),
  host: 'farm-r',
});
const seqs = async (i: string): Promise<number[]> =>
  (await db.sql<{ seq: number }[]>`select seq from modem_transitions where imei = ${i} order by seq`).map(
    (r) => r.seq,
  );
const storedSeq = async (i: string): Promise<number | undefined> =>
  (await db.sql<{ seq: number }[]>`select seq from modems where imei = ${i}`)[0]?.seq;
const pruneAll = async (days: number, maxRows = 5_000): Promise<number> => {
  let total = 0;
  for (let n = -1; n !== 0; total += n) n = await store.pruneTransitionsOlderThan(days * 86_400, maxRows);
  return total;
};

describe('journal retention', () => {
  it('keeps a contiguous suffix per modem, the high-water mark, and idempotent replay of pruned rows', async () => {
    const a = imei(1);
    // 1-6 old; 7 young; 8 old again (a row written late can be older than the one before); 9-10 young
    const ages = [100, 100, 99, 98, 97, 91, 1, 200, 0.5, 0];
    await store.appendTransitions(ages.map((age, k) => row(a, k + 1, age)));
    expect(await pruneAll(90)).toBe(6);
    expect(await seqs(a)).toEqual([7, 8, 9, 10]);
    expect(await storedSeq(a)).toBe(10);

    // the spool replays rows that were stored (and pruned) before: skipped, not stored again
    const replay = await store.appendTransitions(ages.map((age, k) => row(a, k + 1, age)));
    expect(replay).toEqual([{ imei: a, stored: 0, lastSeq: 10, gapAt: null }]);
    expect(await seqs(a)).toEqual([7, 8, 9, 10]);
    // and the journal continues where it was
    expect(await store.appendTransitions([row(a, 11, 0)])).toEqual([
      { imei: a, stored: 1, lastSeq: 11, gapAt: null },
    ]);
    expect(await seqs(a)).toEqual([7, 8, 9, 10, 11]);
    expect(await pruneAll(90)).toBe(0);
  });

  it('prunes a modem whose whole journal is old; its next transitions continue its seq', async () => {
    const b = imei(2);
    await store.appendTransitions(Array.from({ length: 5 }, (_, k) => row(b, k + 1, 120)));
    expect(await pruneAll(90)).toBe(5);
    expect(await seqs(b)).toEqual([]);
    expect(await storedSeq(b)).toBe(5);
    const again = await store.appendTransitions([row(b, 4, 120), row(b, 5, 120), row(b, 6, 0)]);
    expect(again).toEqual([{ imei: b, stored: 1, lastSeq: 6, gapAt: null }]);
    expect(await seqs(b)).toEqual([6]);
  });

  it('works in bounded batches (about maxRows per call) until nothing is left', async () => {
    const modems = [imei(10), imei(11), imei(12)];
    for (const m of modems)
      await store.appendTransitions(
        Array.from({ length: 1_200 }, (_, k) => row(m, k + 1, k < 1_000 ? 95 : 10)),
      );
    const calls: number[] = [];
    for (let n = -1; n !== 0;) {
      n = await store.pruneTransitionsOlderThan(90 * 86_400, 1_000);
      calls.push(n);
    }
    expect(Math.max(...calls)).toBeLessThanOrEqual(1_000);
    expect(calls.reduce((x, y) => x + y, 0)).toBe(3_000);
    for (const m of modems) {
      const left = await seqs(m);
      expect(left.length).toBe(200);
      expect(left[0]).toBe(1_001);
      expect(left.at(-1)).toBe(1_200);
    }
  });

  it('never makes an append wait: a prune held open does not block appends of the same modems', async () => {
    const c = imei(20);
    await store.appendTransitions(Array.from({ length: 50 }, (_, k) => row(c, k + 1, k < 40 ? 100 : 0)));
    const other = openSql(db.url, { max: 1 });
    try {
      await other.begin(async (tx) => {
        const [pruned] = await tx<{ n: number }[]>`
          select prune_modem_transitions(interval '90 days', 5000)::int as n`;
        expect(pruned?.n).toBe(40);
        // while the pruning transaction is open: appends, reads and the modems row go on
        const started = Date.now();
        await store.appendTransitions([row(c, 51, 0), row(c, 52, 0)]);
        expect(Date.now() - started).toBeLessThan(2_000);
        expect(await storedSeq(c)).toBe(52);
      });
    } finally {
      await other.end();
    }
    expect(await seqs(c)).toEqual(Array.from({ length: 12 }, (_, k) => k + 41));
  });

  it('runs from the daemon: first run after start, logged counts, stops cleanly', async () => {
    const d = imei(30);
    await store.appendTransitions(Array.from({ length: 30 }, (_, k) => row(d, k + 1, k < 25 ? 100 : 0)));
    const retention = new JournalRetention({
      sink: store,
      retentionDays: 90,
      firstRunMs: 10,
      batchRows: 10,
      pauseMs: 1,
    });
    retention.start();
    const deadline = Date.now() + 10_000;
    while (retention.stats.pruned < 25 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await retention.stop();
    expect(retention.stats).toMatchObject({ pruned: 25, failures: 0 });
    expect(await seqs(d)).toEqual([26, 27, 28, 29, 30]);

    // a failing database: counted, and the next run tries again
    const failing = new JournalRetention({
      sink: { pruneTransitionsOlderThan: () => Promise.reject(new Error('database away')) },
      retentionDays: 90,
    });
    expect(await failing.prune()).toBe(0);
    expect(failing.stats.failures).toBe(1);
  });
});
