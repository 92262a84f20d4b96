import { fc, test } from '@fast-check/vitest';
import { afterAll, beforeAll, expect } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { appendTransitions } from '../../src/store/journal.js';
import type { TransitionRecord } from '../../src/store/types.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

let run = 0;
const STATES = ['detecting', 'initializing.sim', 'online.serving', 'error', 'recovering'];

/**
 * Whatever order, duplication and batching the writer uses (replays after an outage, a spool replayed
 * twice, batches split anywhere), the journal holds each (imei, seq) once, contiguous from 1, and the
 * modems row reflects the last stored transition.
 */
test.prop(
  [
    fc.array(fc.integer({ min: 1, max: 12 }), { minLength: 1, maxLength: 4 }),
    fc.array(fc.nat({ max: 1000 }), { minLength: 1, maxLength: 60 }),
    fc.integer({ min: 1, max: 8 }),
  ],
  { numRuns: 25 },
)('replays in any order are stored once and contiguously', async (lengths, picks, chunk) => {
  run++;
  const modems = lengths.map((n, i) => ({ imei: String(351000000000000 + run * 10 + i), n }));
  const all: TransitionRecord[] = modems.flatMap(({ imei, n }) =>
    Array.from({ length: n }, (_, k) => ({
      imei,
      seq: k + 1,
      from: k === 0 ? null : (STATES[(k - 1) % STATES.length] ?? null),
      to: STATES[k % STATES.length] ?? 'detecting',
      event: `e${k + 1}`,
      at: new Date(1_700_000_000_000 + k),
    })),
  );
  // a messy stream: random picks (duplicates, any order), then everything once more in order
  const stream = [...picks.map((p) => all[p % all.length] as TransitionRecord), ...all];
  for (let i = 0; i < stream.length; i += chunk) {
    // a chunk may be refused for a modem with a gap; the in-order tail fills it later
    await appendTransitions(db.sql, stream.slice(i, i + chunk));
  }
  for (const { imei, n } of modems) {
    const rows = await db.sql<
      { seq: number }[]
    >`select seq from modem_transitions where imei = ${imei} order by seq`;
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, k) => k + 1));
    const [m] = await db.sql<
      { seq: number; state: string }[]
    >`select seq, state from modems where imei = ${imei}`;
    expect(m?.seq).toBe(n);
    expect(m?.state).toBe((STATES[(n - 1) % STATES.length] ?? '').split('.')[0]);
  }
});
