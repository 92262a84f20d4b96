import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCommand, startFarm, until, type TestFarm } from '../helpers/farm.js';
import { WsClient, type Message } from '../helpers/wsClient.js';

/**
 * Issue 9, hostile operator input: whoever can reach the database can NOTIFY anything and insert
 * anything into modem_commands; whoever can reach the inspector can send anything over the
 * WebSocket. None of it may crash the supervisor or the inspector, lose what is stored, or stop the
 * live stream and the command queue from working.
 */

let farm: TestFarm;
const clients: WsClient[] = [];

function client(): WsClient {
  const c = new WsClient(farm.url);
  clients.push(c);
  return c;
}

beforeAll(async () => {
  farm = await startFarm({ modems: 2, seed: 77 });
  await until(
    async () => (await farm.db.sql`select 1 from modems where state = 'online'`).length === 2,
    30_000,
    'two modems online',
  );
});

afterAll(async () => {
  for (const c of clients) c.close();
  await farm.stop();
});

const metric = async (name: string): Promise<number> => {
  const text = await (await fetch(`${farm.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `) || l.startsWith(`${name}{`));
  return Number(line?.split(' ').pop() ?? NaN);
};

/** Transitions of one modem a client saw, in order of arrival. */
const seqsOf = (messages: Message[], imei: string): number[] =>
  messages.filter((m) => m.type === 'transition' && m['imei'] === imei).map((m) => Number(m['seq']));

describe('hostile operator input', () => {
  it('malformed and oversized NOTIFY payloads by hand: counted and dropped; the stream and commands go on', async () => {
    const watcher = client();
    await watcher.next((m) => m.type === 'snapshot');
    const malformedBefore = await metric('modemfleet_notifications_malformed_total');
    const imei = farm.lab.modem(0).imei;
    const payloads = [
      '',
      'not json',
      '{',
      'null',
      '[]',
      '42',
      '{}',
      '{"imei": 5}',
      `{"imei": "${imei}", "seq": "one", "to": 7}`,
      `{"imei": "${imei}", "seq": -1, "from": null, "to": "online", "event": "x"}`,
      `{"imei": "${'9'.repeat(4000)}"}`,
      JSON.stringify({ pad: 'x'.repeat(7_900) }), // just under PostgreSQL's 8000-byte limit
      `${'['.repeat(3_000)}${']'.repeat(3_000)}`,
      '{"__proto__": {"polluted": true}, "imei": "x"}',
      '\u0000\u0001\u0002',
    ];
    const channels = [
      'modem_status_change',
      'modem_health',
      'modem_alerts',
      'modem_commands',
      'system_events',
    ];
    let sent = 0;
    for (const channel of channels) {
      for (const [i, payload] of payloads.entries()) {
        // PostgreSQL itself refuses NUL in text: that is a clear error at the source, not our problem
        const ok = await farm.db.sql`select pg_notify(${channel}, ${payload} || ${' '.repeat(i % 2)})`.then(
          () => true,
          (err: { code?: string }) => {
            expect(err.code).toBe('22021'); // invalid byte sequence (NUL)
            return false;
          },
        );
        if (ok) sent++;
      }
    }
    // the oversized one: PostgreSQL refuses it with a clear error, nothing reaches us
    await expect(
      farm.db.sql`select pg_notify('modem_status_change', ${'x'.repeat(8_000)})`,
    ).rejects.toMatchObject({
      code: '22023',
    });
    await until(
      async () => (await metric('modemfleet_notifications_malformed_total')) - malformedBefore >= sent,
      10_000,
      'every malformed notification counted',
    );
    expect({} as Record<string, unknown>).not.toHaveProperty('polluted');
    // nothing was forwarded to clients, and the stream goes on: a rotation arrives in order
    expect(watcher.messages.filter((m) => m.type === 'error')).toEqual([]);
    const from = watcher.messages.length;
    const r = await runCommand(farm, imei, 'rotate');
    expect(r.status).toBe('done');
    await watcher.next((m) => m.type === 'command' && m['id'] === r.id && m['status'] === 'done', from);
    const seqs = seqsOf(watcher.messages.slice(from), imei);
    expect(seqs.length).toBeGreaterThan(0);
    expect(seqs).toEqual(seqs.map((_, k) => (seqs[0] ?? 0) + k));
    expect(watcher.closed).toBeUndefined();
  });

  it('malformed commands in SQL: refused with a clear error, nothing stored changes, the queue still works', async () => {
    const imei = farm.lab.modem(1).imei;
    const count = async (): Promise<number> =>
      (await farm.db.sql<{ n: number }[]>`select count(*)::int as n from modem_commands`)[0]?.n ?? -1;
    const before = await count();
    const refused: [string, () => Promise<unknown>][] = [
      ['23514', () => farm.db.sql`insert into modem_commands (imei, kind) values (${imei}, 'selfdestruct')`],
      ['23502', () => farm.db.sql`insert into modem_commands (imei, kind) values (${imei}, null)`],
      [
        '23503',
        () => farm.db.sql`insert into modem_commands (imei, kind) values ('000000000000000', 'rotate')`,
      ],
      [
        '23514',
        () =>
          farm.db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', '')`,
      ],
      [
        '23514',
        () => farm.db.sql`insert into modem_commands (imei, kind, status) values (${imei}, 'rotate', 'done')`,
      ],
      [
        '23514',
        () =>
          farm.db.sql`insert into modem_commands (imei, kind, status) values (${imei}, 'rotate', 'exploded')`,
      ],
      [
        '23514',
        () =>
          farm.db
            .sql`insert into modem_commands (imei, kind, result) values (${imei}, 'rotate', ${farm.db.sql.json(
            {
              pad: 'x'.repeat(10_000),
            },
          )})`,
      ],
      [
        '22P02',
        () => farm.db.sql`insert into modem_commands (id, imei, kind) values ('one', ${imei}, 'rotate')`,
      ],
    ];
    for (const [code, attempt] of refused) await expect(attempt()).rejects.toMatchObject({ code });
    expect(await count()).toBe(before);

    // a command inserted as already running, in the name of a host that does not exist: it would
    // block this modem's queue forever; it is failed as abandoned and the next command runs
    const [ghost] = await farm.db.sql<{ id: string }[]>`
      insert into modem_commands (imei, kind, status, claimed_by, claimed_at)
      values (${imei}, 'reset', 'running', 'ghost-host', now()) returning id`;
    const r = await runCommand(farm, imei, 'rotate');
    expect(r.status).toBe('done');
    const [g] = await farm.db.sql<{ status: string; result: { error: string } }[]>`
      select status, result from modem_commands where id = ${ghost?.id ?? 0}`;
    expect(g).toMatchObject({ status: 'failed', result: { error: 'abandoned' } });
    // and an operator flipping a finished command back changes nothing we did; the flipped rotate is
    // the modem's one pending rotate while it waits (sql/0011: a second one by hand would be refused)
    await farm.db.sql`update modem_commands set status = 'pending', finished_at = null where id = ${r.id}`;
    await until(
      async () => (await farm.store.command(r.id))?.status !== 'pending',
      20_000,
      'the flipped rotate claimed',
    );
    const again = await runCommand(farm, imei, 'rotate');
    expect(again.status).toBe('done');
  });

  it('fuzzed WebSocket messages: answered or closed with a clear code, never a crash; others unaffected', async () => {
    const bystander = client();
    await bystander.next((m) => m.type === 'snapshot');
    const message = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.json({ maxDepth: 4 }),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify({ type: v })),
      fc.constantFrom('{"type":"ping"}', '{"type":"resync"}', '{"type":"resync","extra":1}'),
      fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)),
      fc.integer({ min: 4_000, max: 6_000 }).map((n) => JSON.stringify({ type: 'ping', pad: 'x'.repeat(n) })),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(message, { minLength: 1, maxLength: 25 }), async (messages) => {
        const c = client();
        await c.next((m) => m.type === 'snapshot');
        for (const m of messages) {
          if (c.ws.readyState !== c.ws.OPEN) break;
          c.ws.send(m);
        }
        // every message got an answer, or the connection was closed with a reason code
        const from = c.messages.length;
        if (c.ws.readyState === c.ws.OPEN) c.ws.send('{"type":"ping"}');
        await until(
          () => c.closed !== undefined || c.messages.slice(from).some((m) => m.type === 'pong'),
          5_000,
          'a pong or a close',
        );
        if (c.closed) expect([1008, 1009]).toContain(c.closed.code);
        for (const m of c.messages.filter((x) => x.type === 'error'))
          expect(['bad_message', 'rate_limited']).toContain(m['error']);
        c.close();
      }),
      { numRuns: 40 },
    );
    // the server is fine, the bystander still live and served
    expect((await fetch(`${farm.url}/live`)).status).toBe(200);
    expect(bystander.closed).toBeUndefined();
    const from = bystander.messages.length;
    const r = await runCommand(farm, farm.lab.modem(0).imei, 'rotate');
    await bystander.next((m) => m.type === 'command' && m['id'] === r.id && m['status'] === 'done', from);
  }, 120_000);
});
