import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Inspector } from '../../src/inspector/inspector.js';
import { Store } from '../../src/store/store.js';
import type { HealthSample, TransitionRecord } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TOKEN } from '../helpers/farm.js';

/**
 * GET /api/modems/:imei/history against a real PostgreSQL: a journal and health rows written by
 * hand through the store, the answer compared with what they say (buckets recomputed here).
 */

const A = '356000000000101';
const B = '356000000000102';
const QUIET = '356000000000103';
const H = 3_600_000;

let db: TestDatabase;
let store: Store;
let inspector: Inspector;
let written: HealthSample[] = [];
let now = 0;

interface History {
  imei: string;
  hours: number;
  from: string;
  to: string;
  bucketSeconds: number;
  signal: { at: string; rssi: number | null; rsrp: number | null; sinr: number | null; samples: number }[];
  states: { at: string; state: string }[];
  statesTruncated: boolean;
}

const get = (path: string, token = TOKEN) =>
  fetch(`${inspector.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
const history = async (path: string, token = TOKEN): Promise<History> => {
  const res = await get(path, token);
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as History;
};

const journal = (imei: string, steps: [string, number][]): TransitionRecord[] =>
  steps.map(([to, agoMs], i) => ({
    imei,
    seq: i + 1,
    from: i === 0 ? null : (steps[i - 1]?.[0] ?? null),
    to,
    event: 'test',
    at: new Date(now - agoMs),
  }));

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-a' });
  await store.registerHost();
  for (const imei of [A, B, QUIET]) await store.upsertModem({ imei });
  now = Date.now();
  await store.appendTransitions([
    ...journal(A, [
      ['detecting.probing', 30 * H], // before the window: the state at its start
      ['initializing.sim', 20 * H],
      ['online.serving', 19 * H],
      ['online.rotating.detaching', 10 * H], // a rotation: still online
      ['online.serving', 10 * H - 60_000],
      ['recovering.reinit', 3 * H],
      ['recovering.softReset', 2.8 * H],
      ['error', 2.5 * H],
      ['online.serving', 1 * H],
    ]),
    ...journal(B, [['online.serving', 5 * H]]),
  ]);
  // A: a poll every 37 s over the last 22 h (2141 rows), a few without LTE values, one outside
  // the window; B: one sample
  written = [];
  for (let ago = 22 * H; ago > 60_000; ago -= 37_000) {
    const i = written.length;
    const lte = i % 50 !== 7;
    written.push({
      imei: A,
      at: new Date(now - ago),
      rssi: -60 - (i % 23),
      rsrp: lte ? -80 - (i % 41) : null,
      sinr: lte ? ((i * 7) % 31) - 5 + 0.25 : null,
      technology: lte ? 'LTE' : 'WCDMA',
    });
  }
  written.push({ imei: A, at: new Date(now - 25 * H), rssi: -51, rsrp: -44, sinr: 30 });
  for (let i = 0; i < written.length; i += 500) await store.recordHealth(written.slice(i, i + 500));
  await store.recordHealth([{ imei: B, at: new Date(now - 2 * H), rssi: -70, rsrp: -99, sinr: 11 }]);
  inspector = new Inspector({ store, host: '127.0.0.1', port: 0, token: TOKEN });
  await inspector.start();
});
afterAll(async () => {
  await inspector?.stop();
  await db?.drop();
});

/** The answer's signal points, recomputed from the rows written: bucket means, one decimal. */
function expectedSignal(h: History) {
  const from = Date.parse(h.from);
  const to = Date.parse(h.to);
  const bucketMs = h.bucketSeconds * 1000;
  const buckets = new Map<number, HealthSample[]>();
  for (const s of written) {
    const t = s.at?.getTime() ?? 0;
    if (s.imei !== A || t < from || t > to) continue;
    const k = Math.floor((t - from) / bucketMs);
    buckets.set(k, [...(buckets.get(k) ?? []), s]);
  }
  const mean = (xs: (number | null | undefined)[]) => {
    const v = xs.filter((x): x is number => typeof x === 'number');
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
  };
  return [...buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([, xs]) => ({
      at: mean(xs.map((x) => x.at?.getTime())) ?? 0,
      rssi: mean(xs.map((x) => x.rssi)),
      rsrp: mean(xs.map((x) => x.rsrp)),
      sinr: mean(xs.map((x) => x.sinr)),
      samples: xs.length,
    }));
}

const near = (got: number | null, want: number | null, what: string) => {
  if (want === null) expect(got, what).toBeNull();
  else expect(Math.abs((got ?? Number.NaN) - want), `${what}: ${got} vs ${want}`).toBeLessThanOrEqual(0.0501);
};

describe('GET /api/modems/:imei/history', () => {
  it('24 h by default: signal averaged into at most 288 five-minute buckets, the state strip from the journal', async () => {
    const h = await history(`/api/modems/${A}/history`);
    expect(h).toMatchObject({ imei: A, hours: 24, bucketSeconds: 300, statesTruncated: false });
    // from the first 5-minute boundary of the last 24 h
    expect(Date.parse(h.from) % 300_000).toBe(0);
    expect(Date.parse(h.to) - Date.parse(h.from)).toBeLessThanOrEqual(24 * H);
    expect(Date.parse(h.to) - Date.parse(h.from)).toBeGreaterThan(24 * H - 300_000);
    expect(Math.abs(Date.parse(h.to) - Date.now())).toBeLessThan(60_000);

    const want = expectedSignal(h);
    expect(h.signal.length).toBe(want.length);
    expect(h.signal.length).toBeLessThanOrEqual(288);
    expect(h.signal.length).toBeGreaterThan(250); // 22 h of 5-minute buckets, each with polls
    // every poll of the window is in exactly one point; the one of 25 h ago in none
    const inWindow = written.filter((s) => (s.at?.getTime() ?? 0) >= Date.parse(h.from)).length;
    expect(h.signal.reduce((n, p) => n + p.samples, 0)).toBe(inWindow);
    expect(inWindow).toBe(written.length - 1);
    h.signal.forEach((p, i) => {
      const w = want[i];
      if (!w) throw new Error(`no expected point ${i}`);
      expect(p.samples).toBe(w.samples);
      expect(Math.abs(Date.parse(p.at) - w.at), `point ${i} at`).toBeLessThanOrEqual(1);
      near(p.rssi, w.rssi, `point ${i} rssi`);
      near(p.rsrp, w.rsrp, `point ${i} rsrp`);
      near(p.sinr, w.sinr, `point ${i} sinr`);
      if (i > 0) expect(Date.parse(p.at)).toBeGreaterThan(Date.parse(h.signal[i - 1]?.at ?? ''));
    });
    expect(h.signal.some((p) => p.rsrp !== null && !Number.isInteger(p.rsrp))).toBe(true);

    // the strip: top-level states, the one in force at the window's start from its start
    const fromMs = Date.parse(h.from);
    expect(h.states.map((s) => s.state)).toEqual([
      'detecting',
      'initializing',
      'online',
      'recovering',
      'error',
      'online',
    ]);
    const ago = h.states.map((s) => (now - Date.parse(s.at)) / H);
    expect(Date.parse(h.states[0]?.at ?? '')).toBe(fromMs);
    expect(ago.slice(1)).toEqual([20, 19, 3, 2.5, 1]);
  });

  it('a shorter window: only its polls (every one its own point) and the state in force at its start', async () => {
    const h = await history(`/api/modems/${A}/history?hours=1`);
    expect(h).toMatchObject({ hours: 1, bucketSeconds: 12.5 });
    const from = Date.parse(h.from);
    const polls = written.filter((s) => (s.at?.getTime() ?? 0) >= from);
    // 37 s between polls, 12.5 s buckets: each poll is a point of its own, at its own time
    expect(h.signal.map((p) => Date.parse(p.at))).toEqual(polls.map((s) => s.at?.getTime()));
    expect(h.signal.map((p) => p.rsrp)).toEqual(polls.map((s) => s.rsrp));
    expect(h.signal.every((p) => p.samples === 1)).toBe(true);
    // entered online 1 h ago, a moment before this window began
    expect(h.states).toEqual([{ at: h.from, state: 'online' }]);
  });

  it('a modem with no journal and no health: empty series, not an error', async () => {
    const h = await history(`/api/modems/${QUIET}/history?hours=6`);
    expect(h).toMatchObject({ imei: QUIET, hours: 6, signal: [], states: [] });
  });

  it('bad hours: 400 with a clear error; unknown modem: 404; bad IMEI: 400; no token: 401', async () => {
    for (const q of ['hours=0', 'hours=169', 'hours=abc', 'hours=1.5', 'hours=-3', 'hours=']) {
      const res = await get(`/api/modems/${A}/history?${q}`);
      expect(res.status, q).toBe(400);
      const body = (await res.json()) as { error: string; message: string };
      expect(body.error, q).toBe('invalid_request');
      expect(body.message, q).toMatch(/hours/);
    }
    const extra = await get(`/api/modems/${A}/history?hours=24&points=10`);
    expect(extra.status).toBe(400);
    expect(await extra.json()).toMatchObject({ error: 'invalid_request' });
    const unknown = await get('/api/modems/356000000000999/history');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: 'unknown_modem' });
    expect((await get('/api/modems/12345/history')).status).toBe(400);
    expect((await fetch(`${inspector.url}/api/modems/${A}/history`)).status).toBe(401);
  });

  it('scoped tokens: a reseller sees only its modems; read-only sees every one', async () => {
    const reseller = await store.createToken({
      name: 'history-reseller',
      scope: 'reseller',
      modems: [B],
      createdBy: 'test',
    });
    const own = await history(`/api/modems/${B}/history`, reseller.token);
    expect(own.signal).toEqual([
      expect.objectContaining({ rssi: -70, rsrp: -99, sinr: 11, samples: 1 }) as unknown,
    ]);
    expect(own.states.map((s) => s.state)).toEqual(['online']);
    const other = await get(`/api/modems/${A}/history`, reseller.token);
    expect(other.status).toBe(404);
    expect(await other.json()).toMatchObject({ error: 'unknown_modem' });
    const ro = await store.createToken({ name: 'history-ro', scope: 'read-only', createdBy: 'test' });
    expect((await history(`/api/modems/${A}/history?hours=2`, ro.token)).imei).toBe(A);
  });
});
