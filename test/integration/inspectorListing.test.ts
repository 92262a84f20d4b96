import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { Inspector, type InspectorOptions } from '../../src/inspector/inspector.js';
import { Store } from '../../src/store/store.js';
import type { TransitionRecord } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TOKEN, until } from '../helpers/farm.js';
import { WsClient } from '../helpers/wsClient.js';

/**
 * What a farm of thousands of modems needs from the inspector (issue 20): `/api/modems` paged and
 * filtered in the database (opt-in: without paging it stays the array it was), and a snapshot
 * serialised once per version and view, its bytes shared by every client that connects meanwhile.
 * Modems are journaled straight into a real PostgreSQL by two hosts' stores (no simulator: the
 * listing is what is under test).
 */

let db: TestDatabase;
let inspector: Inspector;
let stores: Store[];
const imeisOf: Record<string, string[]> = { h01: [], h02: [] };
const all: string[] = [];

const imei = (i: number): string => String(353_000_000_000_000 + i);

async function journal(store: Store, imeis: string[], to: string, seqOf: (imei: string) => number) {
  const batch: TransitionRecord[] = imeis.map((i) => ({
    imei: i,
    seq: seqOf(i),
    from: seqOf(i) === 1 ? null : 'detecting.probing',
    to,
    event: 'test',
    at: new Date(),
    host: store.hostId,
  }));
  await store.appendTransitions(batch);
}

/** The HTTP status a WebSocket upgrade is refused with (an upgrade accepted fails the test). */
const refusedWith = (url: string): Promise<number> =>
  new Promise<number>((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), { headers: { authorization: `Bearer ${TOKEN}` } });
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('open', () => {
      ws.terminate();
      reject(new Error(`${url}: the upgrade was accepted`));
    });
    ws.on('error', () => undefined);
  });

/** Another inspector of the farm, started, with these limits. */
const inspectorWith = async (limits: InspectorOptions['limits']): Promise<Inspector> => {
  const other = new Inspector({
    store: stores[0] as Store,
    host: '127.0.0.1',
    port: 0,
    token: TOKEN,
    limits,
  });
  await other.start();
  return other;
};

/** A reseller token for these modems. */
const resellerToken = async (name: string, modems: string[]): Promise<string> =>
  (await (stores[0] as Store).createToken({ name, scope: 'reseller', modems, createdBy: 'test' })).token;

const api = (path: string, token = TOKEN): Promise<Response> =>
  fetch(`${inspector.url}${path}`, { headers: { authorization: `Bearer ${token}` } });

beforeAll(async () => {
  db = await createTestDatabase();
  stores = ['h01', 'h02'].map((hostId) => new Store({ sql: db.sql, url: db.url, hostId }));
  for (const [h, store] of stores.entries()) {
    await store.registerHost();
    for (let i = 0; i < 12; i++) {
      const id = imei(h * 100 + i);
      (imeisOf[store.hostId] ?? []).push(id);
      all.push(id);
    }
    const mine = imeisOf[store.hostId] ?? [];
    await journal(store, mine, 'detecting.probing', () => 1);
    // three of each host's modems stay detecting; the rest go online
    await journal(store, mine.slice(3), 'online.serving', () => 2);
  }
  await db.sql`update modems set operator = 'Telekom.de', wan_ip = '10.64.0.7' where imei = ${imei(105)}`;
  inspector = new Inspector({ store: stores[0] as Store, host: '127.0.0.1', port: 0, token: TOKEN });
  await inspector.start();
});

afterAll(async () => {
  await inspector?.stop();
  await db?.drop();
});

describe('GET /api/modems: paging and filters', () => {
  it('without paging it is the JSON array it was, filtered by host, state and q in the database', async () => {
    const plain = (await (await api('/api/modems')).json()) as { imei: string; host: string }[];
    expect(Array.isArray(plain)).toBe(true);
    expect(plain.map((m) => m.imei).sort()).toEqual([...all].sort());
    const h02 = (await (await api('/api/modems?host=h02')).json()) as { imei: string; host: string }[];
    expect(h02.map((m) => m.imei).sort()).toEqual([...(imeisOf['h02'] ?? [])].sort());
    const detecting = (await (await api('/api/modems?state=detecting&host=h01')).json()) as {
      imei: string;
    }[];
    expect(detecting.map((m) => m.imei).sort()).toEqual((imeisOf['h01'] ?? []).slice(0, 3).sort());
    const substate = (await (await api('/api/modems?state=online.serving')).json()) as { imei: string }[];
    expect(substate).toHaveLength(18);
    // q: any part of the IMEI, operator, addresses, host; case-insensitive; % and _ are plain text
    const byOperator = (await (await api('/api/modems?q=TELEKOM')).json()) as { imei: string }[];
    expect(byOperator.map((m) => m.imei)).toEqual([imei(105)]);
    const byAddress = (await (await api('/api/modems?q=10.64.0.7')).json()) as { imei: string }[];
    expect(byAddress.map((m) => m.imei)).toEqual([imei(105)]);
    expect(await (await api('/api/modems?q=%25')).json()).toEqual([]);
    expect(await (await api('/api/modems?host=h03')).json()).toEqual([]);
  });

  it('pages by IMEI with limit and after: every modem exactly once, filters kept, next null at the end', async () => {
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const r = await api(`/api/modems?limit=5${after ? `&after=${after}` : ''}`);
      expect(r.status).toBe(200);
      const page = (await r.json()) as { modems: { imei: string }[]; next: string | null };
      expect(page.modems.length).toBeLessThanOrEqual(5);
      seen.push(...page.modems.map((m) => m.imei));
      after = page.next;
      if (after !== null) expect(after).toBe(page.modems.at(-1)?.imei);
      pages++;
    } while (after !== null && pages < 10);
    expect(pages).toBe(5); // 24 modems, 5 a page
    expect(seen).toEqual([...all].sort());
    const online = (await (await api('/api/modems?state=online&host=h02&limit=100')).json()) as {
      modems: { imei: string }[];
      next: string | null;
    };
    expect(online).toMatchObject({ next: null });
    expect(online.modems.map((m) => m.imei)).toEqual((imeisOf['h02'] ?? []).slice(3).sort());
    // after alone pages with the default size
    const rest = (await (await api(`/api/modems?after=${imei(5)}`)).json()) as {
      modems: unknown[];
      next: string | null;
    };
    expect(rest).toMatchObject({ next: null });
    expect(rest.modems).toHaveLength(18);
  });

  it('refuses bad input with 400 and a message', async () => {
    for (const q of [
      'limit=0',
      'limit=1001',
      'limit=ten',
      'after=123',
      'after=35300000000000x',
      'host=bad%20host',
      'state=Online;drop',
      `q=${'x'.repeat(65)}`,
      'q=',
      'page=2',
    ]) {
      const r = await api(`/api/modems?${q}`);
      expect(r.status, q).toBe(400);
      expect(((await r.json()) as { error: string }).error, q).toBe('invalid_request');
    }
  });

  it("a reseller's pages hold its modems only, and their cursors never name another's", async () => {
    const own = [imei(2), imei(103), imei(107)];
    const token = await resellerToken('acme', own);
    const first = (await (await api('/api/modems?limit=2', token)).json()) as {
      modems: { imei: string }[];
      next: string | null;
    };
    expect(first.modems.map((m) => m.imei)).toEqual([imei(2), imei(103)]);
    expect(first.next).toBe(imei(103));
    const second = (await (await api(`/api/modems?limit=2&after=${first.next}`, token)).json()) as {
      modems: { imei: string }[];
      next: string | null;
    };
    expect(second).toEqual({ modems: [expect.objectContaining({ imei: imei(107) })], next: null });
  });
});

describe('WebSocket snapshot: serialised once per version, bytes shared', () => {
  it('clients connecting while nothing changes share one serialisation; a change makes the next one new', async () => {
    const stats = inspector.hub.stats;
    // the listing tests above changed nothing since; wait for any notification of theirs to pass
    await new Promise((r) => setTimeout(r, 300));
    const before = { snapshots: stats.snapshots, serialised: stats.snapshotSerialisations };
    const clients = [new WsClient(inspector.url), new WsClient(inspector.url), new WsClient(inspector.url)];
    let later: WsClient | undefined;
    try {
      const snapshots = await Promise.all(clients.map((c) => c.next((m) => m.type === 'snapshot')));
      // one that connects after those were served: no new query, no new serialisation
      later = new WsClient(inspector.url);
      snapshots.push(await later.next((m) => m.type === 'snapshot'));
      for (const s of snapshots) expect((s['modems'] as unknown[]).length).toBe(24);
      expect(stats.snapshots - before.snapshots).toBe(4);
      expect(stats.snapshotSerialisations - before.serialised).toBeLessThanOrEqual(1);
      const serialised = stats.snapshotSerialisations;
      const wholeReads = stats.rowCacheReads;

      // a committed change: the next client's snapshot is read and serialised again, and shows it
      const h01 = stores[0] as Store;
      const first = imeisOf['h01']?.[0] ?? '';
      await journal(h01, [first], 'online.serving', () => 2);
      await clients[0]?.next((m) => m.type === 'transition' && m['imei'] === first);
      const fresh = new WsClient(inspector.url);
      try {
        const s = await fresh.next((m) => m.type === 'snapshot');
        expect(stats.snapshotSerialisations).toBe(serialised + 1);
        const row = (s['modems'] as { imei: string; state: string }[]).find((m) => m.imei === first);
        expect(row?.state).toBe('online');
        // made from the rows in memory and the one row the notification named: no whole read
        expect(stats.rowCacheReads).toBe(wholeReads);
      } finally {
        fresh.close();
      }
    } finally {
      for (const c of [...clients, later]) c?.close();
      await until(() => inspector.hub.size === 0, 5_000, 'clients gone');
    }
  });

  it('?first=N: the snapshot in two messages, the first N rows then the rest, together the whole one', async () => {
    const whole = new WsClient(inspector.url);
    const split = new WsClient(inspector.url, undefined, '?first=5');
    const own = [imei(1), imei(4), imei(104)];
    const token = await resellerToken('split-reseller', own);
    const reseller = new WsClient(inspector.url, { authorization: `Bearer ${token}` }, '?first=2');
    try {
      const full = await whole.next((m) => m.type === 'snapshot');
      const imeis = (m: Record<string, unknown>): string[] =>
        (m['modems'] as { imei: string }[]).map((x) => x.imei);
      expect(full['rest']).toBeUndefined();
      const first = await split.next((m) => m.type === 'snapshot');
      const rest = await split.next((m) => m.type === 'snapshot_rest');
      // right after it, nothing in between
      expect(split.messages.indexOf(rest)).toBe(split.messages.indexOf(first) + 1);
      expect(imeis(first)).toEqual(imeis(full).slice(0, 5));
      expect(first['rest']).toBe(19);
      expect(first['alerts']).toEqual(full['alerts']);
      expect([...imeis(first), ...imeis(rest)]).toEqual(imeis(full));
      expect(rest['modems']).toEqual((full['modems'] as unknown[]).slice(5));
      // a reseller's are its own modems, split the same way
      const mine = await reseller.next((m) => m.type === 'snapshot');
      const mineRest = await reseller.next((m) => m.type === 'snapshot_rest');
      expect([...imeis(mine), ...imeis(mineRest)].sort()).toEqual(own);
      expect(imeis(mine)).toHaveLength(2);
      // fewer rows than N: one message, as without it
      const small = new WsClient(inspector.url, { authorization: `Bearer ${token}` }, '?first=3');
      try {
        const one = await small.next((m) => m.type === 'snapshot');
        expect(imeis(one).sort()).toEqual(own);
        expect(one['rest']).toBeUndefined();
        await new Promise((r) => setTimeout(r, 200));
        expect(small.messages.some((m) => m.type === 'snapshot_rest')).toBe(false);
      } finally {
        small.close();
      }
    } finally {
      for (const c of [whole, split, reseller]) c.close();
    }
    // a bad N is refused before anything else
    for (const bad of ['0', 'ten', '-1', '100000', ''])
      expect(await refusedWith(`${inspector.url}/ws?first=${bad}`), bad).toBe(400);
    await until(() => inspector.hub.size === 0, 5_000, 'clients gone');
  });

  it('rows nobody uses stop being re-read: dropped at the next notification, read whole at the next use', async () => {
    const idle = await inspectorWith({ rowCacheIdleMs: 300 });
    try {
      const stats = idle.hub.stats;
      await until(() => stats.rowCacheReads === 1, 5_000, 'the read at start');
      await new Promise((r) => setTimeout(r, 500));
      const h02 = stores[1] as Store;
      const changed = imeisOf['h02']?.[1] ?? '';
      await journal(h02, [changed], 'online.serving', () => 2);
      await until(() => stats.rowCacheDrops === 1, 5_000, 'rows dropped');
      // the next use reads them whole, and shows the change
      const r = await fetch(`${idle.url}/api/modems`, { headers: { authorization: `Bearer ${TOKEN}` } });
      const rows = (await r.json()) as { imei: string; state: string }[];
      expect(rows.find((m) => m.imei === changed)?.state).toBe('online');
      expect(stats.rowCacheReads).toBe(2);
      // used again: a change is a row re-read, not a drop
      await journal(h02, [changed], 'detecting.probing', () => 3);
      await new Promise((r) => setTimeout(r, 300));
      expect(stats.rowCacheDrops).toBe(1);
    } finally {
      await idle.stop();
    }
  });

  it('caps clients per address by configuration (503 above), apart from the farm-wide cap', async () => {
    const capped = await inspectorWith({ maxClients: 10, maxClientsPerAddress: 2 });
    const clients = [new WsClient(capped.url), new WsClient(capped.url)];
    try {
      await Promise.all(clients.map((c) => c.next((m) => m.type === 'snapshot')));
      // a third client from one address
      expect(await refusedWith(`${capped.url}/ws`)).toBe(503);
      expect(capped.hub.size).toBe(2);
    } finally {
      for (const c of clients) c.close();
      await capped.stop();
    }
  });
});
