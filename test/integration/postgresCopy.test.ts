import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectAfter } from '../../src/util/time.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

// postgres.js 3.4.9's COPY streams, as patched by scripts/patch-postgres.mjs (backup and restore
// stream every table through them): without the patch each of these hangs.
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await db.sql`create table copy_t (id int primary key, v text not null check (v <> 'bad'))`;
  await db.sql`insert into copy_t select g, repeat('x', 50) from generate_series(1, 20000) g`;
});
afterAll(async () => {
  await db?.drop();
});

const within = <T>(p: Promise<T>, ms: number): Promise<T> =>
  rejectAfter(p, ms, () => new Error(`no answer within ${ms} ms`));

describe('COPY through postgres.js', () => {
  it('a slowly read COPY TO leaves the connection usable (the next query in the transaction answers)', async () => {
    const rounds = await within(
      db.sql.begin('isolation level repeatable read read only', async (tx) => {
        const seen: number[] = [];
        for (let round = 0; round < 2; round++) {
          const out = await tx.unsafe('copy copy_t to stdout').readable();
          let bytes = 0;
          for await (const chunk of out) {
            bytes += (chunk as Buffer).length;
            await sleep(1); // slower than the server: the socket is paused on the way
          }
          const [row] = await tx<{ n: number }[]>`select count(*)::int as n from copy_t`;
          seen.push(bytes, row?.n ?? -1);
        }
        return seen;
      }),
      30_000,
    );
    expect(rounds).toEqual([1_128_894, 20_000, 1_128_894, 20_000]);
  });

  it('a COPY FROM the server rejects after end(): the writable errors with its message and the transaction rolls back', async () => {
    const attempt = db.sql.begin(async (tx) => {
      await tx`truncate copy_t`;
      const w = await tx.unsafe('copy copy_t (id, v) from stdin').writable();
      const done = new Promise<void>((resolve, reject) => {
        w.on('finish', resolve);
        w.on('error', reject);
      });
      w.write('1\tok\n2\tbad\n');
      w.end();
      await done;
    });
    await expect(within(attempt, 10_000)).rejects.toThrow(/violates check constraint "copy_t_v_check"/);
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from copy_t`;
    expect(row?.n).toBe(20_000);
  });
});
