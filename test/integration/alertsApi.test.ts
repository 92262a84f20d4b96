import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseWebhook } from '../../src/alerts/webhookSpec.js';
import { loadConfig } from '../../src/config.js';
import { startWebhooks } from '../../src/daemon.js';
import { silentLogger } from '../../src/log.js';
import { Inspector } from '../../src/inspector/inspector.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TOKEN } from '../helpers/farm.js';
import { WebhookReceiver } from '../helpers/webhookReceiver.js';

const IMEI = '356000000000001';
let db: TestDatabase;
let store: Store;
let inspector: Inspector;
const receiver = new WebhookReceiver();

const api = async (path: string, init: RequestInit = {}) => {
  const res = await fetch(`${inspector.url}${path}`, {
    ...init,
    headers: {
      authorization: `Bearer ${TOKEN}`,
      ...(init.body ? { 'content-type': 'application/json' } : {}),
    },
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as Record<string, unknown> };
};
const post = (path: string, body?: unknown) =>
  api(path, { method: 'POST', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
const count = async (table: string) =>
  (await db.sql<{ n: number }[]>`select count(*)::int as n from ${db.sql(table)}`)[0]?.n;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-a' });
  await db.sql`insert into hosts (id, name) values ('host-a', 'a')`;
  await db.sql`insert into modems (imei, host_id) values (${IMEI}, 'host-a')`;
  await receiver.up();
  inspector = new Inspector({ store, host: '127.0.0.1', port: 0, token: TOKEN });
  await inspector.start();
});
afterAll(async () => {
  await inspector?.stop();
  await receiver.down();
  await db?.drop();
});

describe('push alerts API', () => {
  it('creates a webhook, answers its secret once, tests it with a signed delivery, deletes it', async () => {
    const created = await post('/api/webhooks', {
      name: 'ops',
      url: receiver.url('/hook'),
      filter: { severities: ['critical'] },
    });
    expect(created.status).toBe(201);
    const secret = created.body['secret'] as string;
    expect(secret.length).toBeGreaterThanOrEqual(16);
    const id = created.body['id'] as number;
    const listed = await api('/api/webhooks');
    expect(listed.body).toEqual([
      expect.objectContaining({ id, name: 'ops', format: 'json', source: 'api', waiting: 0 }),
    ]);
    expect(JSON.stringify(listed.body)).not.toContain(secret);
    expect(JSON.stringify((await api(`/api/webhooks/${id}`)).body)).not.toContain(secret);

    const test = await post(`/api/webhooks/${id}/test`);
    expect(test).toMatchObject({ status: 200, body: { delivered: true, status: 200, error: null } });
    const [got] = receiver.received;
    expect(got?.headers['x-modemfleet-signature']).toBe(
      `sha256=${createHmac('sha256', secret)
        .update(got?.body ?? '')
        .digest('hex')}`,
    );
    expect(JSON.parse(got?.body ?? '{}')).toMatchObject({
      event: 'test',
      webhook: 'ops',
      alert: { kind: 'webhook_test' },
    });

    receiver.status = 500;
    const failed = await post(`/api/webhooks/${id}/test`);
    receiver.status = 307;
    receiver.headers = { location: 'http://127.0.0.2:9/elsewhere' };
    const moved = await post(`/api/webhooks/${id}/test`);
    receiver.status = 200;
    receiver.headers = {};
    expect(moved).toMatchObject({
      body: { delivered: false, status: 307, error: 'redirect not followed (HTTP 307)' },
    });
    expect(receiver.received).toHaveLength(3); // nothing went to the other address
    expect(failed).toMatchObject({
      body: { delivered: false, status: 500, error: 'HTTP 500: receiver says no' },
    });
    const deliveries = (await api(`/api/webhooks/${id}/deliveries`)).body as unknown as Record<
      string,
      unknown
    >[];
    expect(deliveries.map((d) => [d['event'], d['status'], d['attempts']])).toEqual([
      ['test', 'failed', 1],
      ['test', 'failed', 1],
      ['test', 'delivered', 1],
    ]);

    expect((await api(`/api/webhooks/${id}`, { method: 'DELETE' })).status).toBe(204);
    expect(await api(`/api/webhooks/${id}`, { method: 'DELETE' })).toMatchObject({
      status: 404,
      body: { error: 'unknown_webhook' },
    });
    expect((await post(`/api/webhooks/${id}/test`)).status).toBe(404);
  });

  it('refuses bad webhooks with 400 naming the problems, and stores nothing', async () => {
    const before = await count('webhooks');
    const cases: [unknown, RegExp][] = [
      [{ name: 'x', url: 'file:///etc/passwd' }, /url: must be an http\(s\) URL/],
      [{ name: 'x', url: 'https://h.example/', format: 'telegram' }, /chatId: format "telegram" needs/],
      [{ name: 'x', url: 'https://h.example/', filter: { severities: ['urgent'] } }, /filter.severities/],
      [{ name: 'x', url: 'https://h.example/', hmm: 1 }, /hmm: unknown setting/],
    ];
    for (const [body, message] of cases) {
      const r = await post('/api/webhooks', body);
      expect(r).toMatchObject({ status: 400, body: { error: 'invalid_webhook' } });
      expect(r.body['message']).toMatch(message);
    }
    expect((await post('/api/webhooks', [1])).status).toBe(400);
    expect(await count('webhooks')).toBe(before);
    expect((await post('/api/webhooks', { name: 'twice', url: 'https://h.example/' })).status).toBe(201);
    expect(await post('/api/webhooks', { name: 'twice', url: 'https://h.example/' })).toMatchObject({
      status: 409,
      body: { error: 'webhook_exists' },
    });
  });

  it('keeps config webhooks: shown with a hidden bot token, not deletable through the API', async () => {
    const problems: string[] = [];
    const spec = parseWebhook(
      { name: 'tg', format: 'telegram', botToken: '123456:ABCdefGHIjklMNOpqrSTUvwx', chatId: '42' },
      'webhooks[0]',
      problems,
    );
    await store.syncConfigWebhooks(spec ? [spec] : []);
    const tg = ((await api('/api/webhooks')).body as unknown as Record<string, unknown>[]).find(
      (w) => w['name'] === 'tg',
    );
    expect(tg).toMatchObject({ source: 'config', url: 'https://api.telegram.org/bot***/sendMessage' });
    expect(await api(`/api/webhooks/${String(tg?.['id'])}`, { method: 'DELETE' })).toMatchObject({
      status: 409,
      body: { error: 'config_webhook' },
    });
    await store.syncConfigWebhooks([]);
    expect((await api(`/api/webhooks/${String(tg?.['id'])}`)).status).toBe(404);
  });

  it('keeps the config file’s webhooks in the table when the daemon starts its worker', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-hooks-'));
    const file = join(dir, 'config.json');
    const webhooks = [
      { name: 'from-file', format: 'chat', url: receiver.url('/file'), filter: { kinds: ['sim_swap'] } },
    ];
    await writeFile(file, JSON.stringify({ webhooks }));
    const dispatcher = await startWebhooks(loadConfig({ env: {}, file }), store, silentLogger);
    try {
      const listed = (await api('/api/webhooks')).body as unknown as Record<string, unknown>[];
      expect(listed.filter((w) => w['source'] === 'config')).toEqual([
        expect.objectContaining({
          name: 'from-file',
          format: 'chat',
          filter: { kinds: ['sim_swap'], severities: null, resolved: false },
        }),
      ]);
    } finally {
      await dispatcher.stop();
      await store.syncConfigWebhooks([]);
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('acknowledges an alert: who and when, in the alerts list', async () => {
    const id = await store.raiseAlert({
      kind: 'sim_swap',
      severity: 'warning',
      message: 'new ICCID',
      imei: IMEI,
    });
    const ack = await post(`/api/alerts/${id}/ack`);
    expect(ack).toMatchObject({
      status: 200,
      body: { id, ackedBy: expect.stringMatching(/^api:/) as unknown },
    });
    const [listed] = (await api(`/api/alerts?imei=${IMEI}`)).body as unknown as Record<string, unknown>[];
    expect(listed).toMatchObject({ id, ackedAt: ack.body['ackedAt'], silenced: false });
    expect(await post('/api/alerts/999999/ack')).toMatchObject({
      status: 404,
      body: { error: 'unknown_alert' },
    });
    expect((await post('/api/alerts/abc/ack')).status).toBe(400);
  });

  it('silences a modem until a time, lists it, ends it; refuses bad windows', async () => {
    const until = new Date(Date.now() + 7_200_000).toISOString();
    const set = await post(`/api/modems/${IMEI}/silence`, { until });
    expect(set).toMatchObject({ status: 200, body: { imei: IMEI, until } });
    expect((await api('/api/silences')).body).toEqual([expect.objectContaining({ imei: IMEI, until })]);
    const id = await store.raiseAlert({
      kind: 'egress_mismatch',
      severity: 'critical',
      message: 'x',
      imei: IMEI,
    });
    const [alert] = (await api(`/api/alerts?imei=${IMEI}`)).body as unknown as Record<string, unknown>[];
    expect(alert).toMatchObject({ id, silenced: true });

    const bad: [unknown, number, string][] = [
      [{ until: new Date(Date.now() - 1000).toISOString() }, 400, 'invalid_silence'],
      [{ until: new Date(Date.now() + 40 * 86_400_000).toISOString() }, 400, 'invalid_silence'],
      [{ until: 'soon' }, 400, 'invalid_request'],
      [{}, 400, 'invalid_request'],
    ];
    for (const [body, status, error] of bad)
      expect(await post(`/api/modems/${IMEI}/silence`, body)).toMatchObject({ status, body: { error } });
    expect(await post('/api/modems/356000000000099/silence', { until })).toMatchObject({
      status: 404,
      body: { error: 'unknown_modem' },
    });
    expect((await api('/api/silences')).body).toEqual([expect.objectContaining({ imei: IMEI, until })]);

    expect((await api(`/api/modems/${IMEI}/silence`, { method: 'DELETE' })).status).toBe(204);
    expect(await api(`/api/modems/${IMEI}/silence`, { method: 'DELETE' })).toMatchObject({
      status: 404,
      body: { error: 'unknown_silence' },
    });
    expect((await api('/api/silences')).body).toEqual([]);
  });
});
