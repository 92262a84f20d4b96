import { createHmac } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebhookDispatcher, type WebhookPolicy } from '../../src/alerts/webhookDispatcher.js';
import { parseWebhook, type AlertEvent } from '../../src/alerts/webhookSpec.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { until } from '../helpers/until.js';
import { WebhookReceiver } from '../helpers/webhookReceiver.js';

const IMEI = '356000000000001';
const OTHER = '356000000000002';
const SECRET = 'receiver-secret-0123456789';
const POLICY: Partial<WebhookPolicy> = {
  timeoutMs: 2_000,
  retryBaseMs: 100,
  retryCapMs: 400,
  maxAttempts: 100,
  pollMs: 500,
};

let db: TestDatabase;
let hostA: Store;
let hostB: Store;
const receiver = new WebhookReceiver();
const dispatchers: WebhookDispatcher[] = [];

function spec(input: Record<string, unknown>) {
  const problems: string[] = [];
  const s = parseWebhook(input, '', problems);
  if (!s) throw new Error(problems.join('; '));
  return s;
}

async function dispatcher(store: Store, policy: Partial<WebhookPolicy> = POLICY) {
  const d = new WebhookDispatcher({ store, policy, heartbeatIntervalMs: 500, heartbeatTimeoutMs: 2_000 });
  await d.start();
  dispatchers.push(d);
  return d;
}

const raise = (
  store: Store,
  n: number,
  imei: string | null = IMEI,
  severity: 'info' | 'warning' | 'critical' = 'warning',
) =>
  store.raiseAlert({ kind: 'egress_mismatch', severity, message: `alert ${n}`, ...(imei ? { imei } : {}) });

/** Alert ids of the signed JSON deliveries received, in arrival order. */
const jsonIds = () => receiver.bodies<AlertEvent>('/json').map((b) => `${b.event}:${b.alert.id}`);

beforeAll(async () => {
  db = await createTestDatabase();
  hostA = new Store({ sql: db.sql, url: db.url, hostId: 'host-a' });
  hostB = new Store({ sql: db.sql, url: db.url, hostId: 'host-b' });
  await db.sql`insert into hosts (id, name) values ('host-a', 'a'), ('host-b', 'b')`;
  await db.sql`insert into modems (imei, host_id) values (${IMEI}, 'host-a'), (${OTHER}, 'host-b')`;
  await receiver.up();
  await hostA.createWebhook(
    spec({ name: 'ops', url: receiver.url('/json'), secret: SECRET, filter: { resolved: true } }),
    'test',
  );
  await hostA.createWebhook(
    spec({ name: 'chat', format: 'chat', url: receiver.url('/chat'), filter: { severities: ['critical'] } }),
    'test',
  );
  await hostA.createWebhook(
    spec({
      name: 'tg',
      format: 'telegram',
      url: receiver.url('/bot123:abc/sendMessage'),
      chatId: '-100200',
      filter: { kinds: ['sim_swap'] },
    }),
    'test',
  );
  // two hosts of one farm, each with its worker
  await dispatcher(hostA);
  await dispatcher(hostB);
});

afterAll(async () => {
  for (const d of dispatchers) await d.stop();
  await receiver.down();
  await db?.drop();
});

describe('push alerts: webhook deliveries', () => {
  it('delivers signed alerts once and in order, across two hosts and the receiver’s outage', async () => {
    const ids: number[] = [];
    for (let n = 1; n <= 3; n++) ids.push(await raise(n % 2 ? hostA : hostB, n));
    await until(() => jsonIds().length >= 3, 10_000, 'three deliveries');
    expect(jsonIds()).toEqual(ids.map((id) => `raised:${id}`));
    for (const r of receiver.received.filter((x) => x.path === '/json')) {
      const expected = `sha256=${createHmac('sha256', SECRET).update(r.body).digest('hex')}`;
      expect(r.headers['x-modemfleet-signature']).toBe(expected);
      expect(r.headers['x-modemfleet-event']).toBe('raised');
      expect(r.headers['content-type']).toBe('application/json');
    }
    expect(receiver.bodies<AlertEvent>('/json')[0]).toMatchObject({
      webhook: 'ops',
      alert: { kind: 'egress_mismatch', severity: 'warning', imei: IMEI, host: 'host-a', message: 'alert 1' },
    });

    // the receiver goes away: deliveries wait, the first is retried with backoff, the later ones hold
    await receiver.down();
    for (let n = 4; n <= 6; n++) ids.push(await raise(n % 2 ? hostA : hostB, n));
    const ops = Number((await hostA.webhooks()).find((w) => w.name === 'ops')?.id);
    await until(
      async () => {
        const [first] = (await hostA.deliveries(ops)).filter((d) => d.alertId === ids[3]);
        return first && first.attempts >= 3 && first.status === 'pending' && first.lastError !== null;
      },
      10_000,
      'delivery of alert 4 retried',
    );
    const waiting = (await hostA.deliveries(ops)).filter((d) => d.alertId === ids[4] || d.alertId === ids[5]);
    expect(waiting.map((d) => [d.status, d.attempts])).toEqual([
      ['pending', 0],
      ['pending', 0],
    ]);
    const [retried] = (await hostA.deliveries(ops)).filter((d) => d.alertId === ids[3]);
    expect(retried?.lastError).toMatch(/ECONNREFUSED/);
    expect(jsonIds()).toHaveLength(3);

    await receiver.up();
    await until(() => jsonIds().length >= 6, 10_000, 'the deliveries after the outage');
    await new Promise((r) => setTimeout(r, 500)); // nothing more comes: each alert exactly once
    expect(jsonIds()).toEqual(ids.map((id) => `raised:${id}`));
    const rows = await db.sql<{ status: string; n: number }[]>`
      select d.status, count(*)::int as n from webhook_deliveries d join webhooks w on w.id = d.webhook_id
      where w.name = 'ops' group by d.status`;
    expect(rows).toEqual([{ status: 'delivered', n: 6 }]);
  });

  it('filters by severity and kind; renders chat and Telegram bodies; delivers a resolution', async () => {
    const critical = await raise(hostB, 7, OTHER, 'critical');
    const swap = await hostA.raiseAlert({
      kind: 'sim_swap',
      severity: 'warning',
      message: 'new ICCID',
      imei: IMEI,
    });
    await hostA.resolveAlert(critical);
    await until(
      () => receiver.bodies('/chat').length >= 1 && receiver.bodies('/bot123:abc/sendMessage').length >= 1,
    );
    await until(() => jsonIds().includes(`resolved:${critical}`), 10_000, 'the resolution');
    expect(receiver.bodies('/chat')).toEqual([
      { text: `[CRITICAL] egress_mismatch (modem ${OTHER}, host host-b): alert 7` },
    ]);
    expect(receiver.bodies('/bot123:abc/sendMessage')).toEqual([
      {
        chat_id: '-100200',
        text: `[WARNING] sim_swap (modem ${IMEI}, host host-a): new ICCID`,
        disable_web_page_preview: true,
      },
    ]);
    expect(jsonIds().slice(-3)).toEqual([`raised:${critical}`, `raised:${swap}`, `resolved:${critical}`]);
  });

  it('records a silenced modem’s alerts and pushes none of them', async () => {
    await hostA.setSilence(IMEI, new Date(Date.now() + 3_600_000), 'test');
    const before = receiver.received.length;
    const silenced = [await raise(hostA, 8), await raise(hostA, 9, IMEI, 'critical')];
    const loud = await raise(hostB, 10, OTHER);
    await until(() => jsonIds().includes(`raised:${loud}`), 10_000, 'the other modem’s alert');
    await hostA.resolveAlert(silenced[0] ?? 0);
    await new Promise((r) => setTimeout(r, 700));
    const pushed = receiver.received.slice(before).map((r) => JSON.parse(r.body) as AlertEvent);
    expect(pushed.map((b) => `${b.event}:${b.alert.id}`)).toEqual([`raised:${loud}`]);
    const stored = await hostA.alerts({ open: false, imei: IMEI, limit: 2 });
    expect(stored.map((a) => [a.id, a.silenced])).toEqual([
      [silenced[1], true],
      [silenced[0], true],
    ]);
    const [none] = await db.sql<{ n: number }[]>`
      select count(*)::int as n from webhook_deliveries where alert_id in ${db.sql(silenced)}`;
    expect(none?.n).toBe(0);

    expect(await hostA.clearSilence(IMEI)).toBe(true);
    const after = await raise(hostA, 11);
    await until(() => jsonIds().includes(`raised:${after}`), 10_000, 'an alert after the silence');
  });

  it('gives a delivery up after the policy’s attempts, recording why', async () => {
    for (const d of dispatchers.splice(0)) await d.stop();
    await dispatcher(hostA, { ...POLICY, maxAttempts: 3 });
    const dead = new WebhookReceiver();
    await dead.up();
    const url = dead.url('/gone');
    await dead.down();
    const hook = await hostA.createWebhook(
      spec({ name: 'dead', url, secret: SECRET, filter: { kinds: ['dead_end'] } }),
      'test',
    );
    await hostA.raiseAlert({ kind: 'dead_end', severity: 'info', message: 'nobody listens' });
    const gaveUp = await until(
      async () => (await hostA.deliveries(hook.id)).find((d) => d.status === 'failed'),
      10_000,
      'the delivery given up',
    );
    expect(gaveUp).toMatchObject({ attempts: 3, nextAttemptAt: null, lastStatus: null });
    expect(gaveUp.lastError).toMatch(/ECONNREFUSED/);
  });
});
