import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { onlineCount, startFarm, TOKEN, until, type TestFarm } from '../helpers/farm.js';
import { WsClient, type Message } from '../helpers/wsClient.js';

/** Scoped API tokens against a running supervisor and inspector: REST and WebSocket. */

let farm: TestFarm;
let imeis: string[];
let passwords: string[];
const clients: WsClient[] = [];

beforeAll(async () => {
  farm = await startFarm({ modems: 3 });
  await until(async () => (await onlineCount(farm)) === 3, 30_000, '3 online');
  await until(async () => (await farm.store.modems()).every((m) => m.proxy !== null), 10_000, 'allocations');
  const modems = await farm.store.modems();
  imeis = modems.map((m) => m.imei);
  passwords = modems.map((m) => m.proxy?.password ?? '');
});
afterAll(async () => {
  for (const c of clients) c.close();
  await farm?.stop();
});

const as =
  (token: string) =>
  (path: string, init: RequestInit = {}) =>
    fetch(`${farm.url}${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        ...(init.body ? { 'content-type': 'application/json' } : {}),
      },
    });

const ws = (token: string): WsClient => {
  const c = new WsClient(farm.url, { authorization: `Bearer ${token}` });
  clients.push(c);
  return c;
};

const commandCount = async (): Promise<number> =>
  (await farm.db.sql<{ n: number }[]>`select count(*)::int as n from modem_commands`)[0]?.n ?? -1;

const noPassword = (text: string): void => {
  for (const p of passwords) expect(text).not.toContain(p);
};

describe('scoped API tokens', () => {
  it('read-only: every modem, no password anywhere (REST and WebSocket), 403 on every change', async () => {
    const { token } = await farm.store.createToken({ name: 'noc', scope: 'read-only', createdBy: 'test' });
    const api = as(token);
    const list = await api('/api/modems');
    expect(list.status).toBe(200);
    const text = await list.text();
    noPassword(text);
    const modems = JSON.parse(text) as { imei: string; proxy: { username: string; password: null } }[];
    expect(modems.map((m) => m.imei)).toEqual(imeis);
    for (const m of modems) {
      expect(m.proxy.username).toMatch(/^[a-z0-9]{4,32}$/);
      expect(m.proxy.password).toBeNull();
    }
    const one = await api(`/api/modems/${imeis[0]}`);
    expect(one.status).toBe(200);
    noPassword(await one.text());
    expect(await (await api('/api/whoami')).json()).toMatchObject({ scope: 'read-only', commands: false });

    const before = await commandCount();
    const imei = imeis[0] ?? '';
    const refused = [
      await api(`/api/modems/${imei}/commands`, { method: 'POST', body: '{"kind":"rotate"}' }),
      await api(`/api/modems/${imei}/credentials`, { method: 'POST' }),
      await api(`/api/modems/${imei}/credentials`),
      await api(`/api/modems/${imei}/rotation-link`, { method: 'POST' }),
      await api(`/api/modems/${imei}/schedule`, { method: 'PUT', body: '{"interval":"10m"}' }),
    ];
    for (const r of refused) {
      expect(r.status).toBe(403);
      expect(await r.json()).toMatchObject({ error: 'forbidden' });
    }
    expect(await commandCount()).toBe(before);
    expect((await farm.store.credentials(imei)).password).toBe(passwords[0]);

    // the WebSocket: snapshot and the modem rows that follow, without passwords
    const c = ws(token);
    const snapshot = await c.next((m) => m.type === 'snapshot');
    noPassword(JSON.stringify(snapshot));
    expect((snapshot['modems'] as unknown[]).length).toBe(3);
    const from = c.messages.length;
    await farm.store.insertCommand(imeis[2] ?? '', 'disable', 'test');
    const row = await c.next((m) => m.type === 'modem' && m['modem'] !== undefined, from, 20_000);
    expect((row['modem'] as { proxy: { password: unknown } }).proxy.password).toBeNull();
    await c.next((m) => m.type === 'command' && m['status'] === 'done', from, 20_000);
    noPassword(JSON.stringify(c.messages));
    await farm.store.insertCommand(imeis[2] ?? '', 'enable', 'test');
  });

  it('reseller: only its modems (REST, WebSocket snapshot and stream), commands only on those', async () => {
    const own = imeis.slice(0, 2);
    const other = imeis[2] ?? '';
    const { token } = await farm.store.createToken({
      name: 'acme',
      scope: 'reseller',
      modems: own,
      createdBy: 'test',
    });
    const api = as(token);
    const modems = (await (await api('/api/modems')).json()) as {
      imei: string;
      proxy: { password: string };
    }[];
    expect(modems.map((m) => m.imei)).toEqual(own);
    expect(modems.map((m) => m.proxy.password)).toEqual(passwords.slice(0, 2));
    expect((await api(`/api/modems/${other}`)).status).toBe(404);
    expect((await api(`/api/modems/${other}/transitions`)).status).toBe(404);
    expect((await api('/api/addresses/stats')).status).toBe(403);

    const before = await commandCount();
    const refused = await api(`/api/modems/${other}/commands`, { method: 'POST', body: '{"kind":"rotate"}' });
    expect(refused.status).toBe(404);
    expect((await api(`/api/modems/${other}/credentials`, { method: 'POST' })).status).toBe(404);
    expect(await commandCount()).toBe(before);
    const otherCommand = await farm.store.insertCommand(other, 'reset', 'test');
    expect((await api(`/api/commands/${otherCommand}`)).status).toBe(404);

    const c = ws(token);
    const admin = ws('test-token-0123456789abcdef');
    const snapshot = await c.next((m) => m.type === 'snapshot');
    expect((snapshot['modems'] as { imei: string }[]).map((m) => m.imei)).toEqual(own);
    await admin.next((m) => m.type === 'snapshot');
    // its own modem's command and transitions reach it; the other modem's reach only the admin
    const accepted = await api(`/api/modems/${own[0]}/commands`, {
      method: 'POST',
      body: '{"kind":"disable"}',
    });
    expect(accepted.status).toBe(202);
    const { id } = (await accepted.json()) as { id: number };
    expect(((await (await api(`/api/commands/${id}`)).json()) as { imei: string }).imei).toBe(own[0]);
    await c.next((m) => m.type === 'transition' && m['imei'] === own[0] && m['to'] === 'disabled', 0, 20_000);
    await admin.next((m) => m.type === 'transition' && m['imei'] === other, 0, 20_000);
    await admin.next(
      (m) => m.type === 'transition' && m['imei'] === own[0] && m['to'] === 'disabled',
      0,
      20_000,
    );
    const about = (m: Message): string | undefined =>
      (m['imei'] as string | undefined) ?? (m['modem'] as { imei?: string } | undefined)?.imei;
    expect(c.messages.filter((m) => about(m) === other)).toEqual([]);
    expect(c.messages.some((m) => m.type === 'host')).toBe(false);
    await farm.store.insertCommand(own[0] ?? '', 'enable', 'test');
  });

  it('a revoked token is refused at once: REST 401, its WebSocket clients disconnected', async () => {
    const { token } = await farm.store.createToken({ name: 'gone', scope: 'admin', createdBy: 'test' });
    expect((await as(token)('/api/modems')).status).toBe(200);
    const c = ws(token);
    await c.next((m) => m.type === 'snapshot');
    const other = ws('test-token-0123456789abcdef');
    await other.next((m) => m.type === 'snapshot');
    await farm.store.revokeToken('gone');
    expect((await as(token)('/api/modems')).status).toBe(401);
    await until(() => c.closed !== undefined, 5_000, 'the revoked client disconnected');
    expect(c.closed?.code).toBe(1008);
    expect(other.closed).toBeUndefined();
    const again = ws(token);
    await until(() => again.closed !== undefined, 5_000, 'the upgrade refused');
    expect(again.messages).toEqual([]);
  });

  it('a revocation missed while the listen connection was down is caught up after it', async () => {
    const { token } = await farm.store.createToken({ name: 'missed', scope: 'read-only', createdBy: 'test' });
    const c = ws(token);
    await c.next((m) => m.type === 'snapshot');
    farm.dbProxy.cut();
    // revoked directly in the database, while the inspector hears nothing
    await farm.db.sql`update api_tokens set revoked_at = now() where name = 'missed'`;
    await new Promise((r) => setTimeout(r, 300));
    expect(c.closed).toBeUndefined();
    farm.dbProxy.up();
    await until(() => c.closed !== undefined, 20_000, 'the client of the revoked token disconnected');
    expect(c.closed?.code).toBe(1008);
  });

  it('bad input gets a clear error and changes nothing', async () => {
    const count = async () =>
      (await farm.db.sql`select count(*)::int as n from api_tokens`)[0]?.['n'] as number;
    const before = await count();
    const create = (input: { name: string; scope: string; modems?: string[] }) =>
      farm.store.createToken({ ...input, createdBy: 'test' });
    await expect(create({ name: 'x', scope: 'superuser' })).rejects.toMatchObject({ code: 'invalid_token' });
    await expect(create({ name: 'Bad Name!', scope: 'admin' })).rejects.toMatchObject({
      code: 'invalid_token',
    });
    await expect(create({ name: 'r1', scope: 'reseller' })).rejects.toMatchObject({ code: 'invalid_token' });
    await expect(
      create({ name: 'r2', scope: 'reseller', modems: [imeis[0] ?? '', '356999999999999'] }),
    ).rejects.toMatchObject({ code: 'unknown_modem' });
    await expect(create({ name: 'noc', scope: 'admin' })).rejects.toMatchObject({ code: 'token_exists' });
    await expect(farm.store.revokeToken('nobody')).rejects.toMatchObject({ code: 'unknown_token' });
    expect(await count()).toBe(before);
    expect(
      await farm.db
        .sql`select * from api_token_modems m join api_tokens t on t.id = m.token_id where t.name like 'r%'`,
    ).toHaveLength(0);

    const unknown = await farm.api('/api/modems/356999999999999/credentials', { method: 'POST' });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: 'unknown_modem' });
    expect((await farm.api(`/api/modems/${imeis[0]}/credentials?wait=999`, { method: 'POST' })).status).toBe(
      400,
    );
    expect((await farm.store.credentials(imeis[0] ?? '')).password).toBe(passwords[0]);
  });

  it('an admin rotates a password through the API; the host that owns the modem carries it out', async () => {
    const imei = imeis[1] ?? '';
    const watcher = ws(TOKEN);
    await watcher.next((m) => m.type === 'snapshot');
    const res = await farm.api(`/api/modems/${imei}/credentials`, { method: 'POST' });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { username: string; password: string; command: { status: string } };
    expect(body.password).not.toBe(passwords[1]);
    const rowWith = (of: string, password: string) => (m: Message) => {
      const modem =
        m.type === 'modem' ? (m['modem'] as { imei: string; proxy: { password: string } | null }) : null;
      return modem?.imei === of && modem.proxy?.password === password;
    };
    await watcher.next(rowWith(imei, body.password));
    expect(body.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(body.command.status).toBe('done');
    const shown = (await (await farm.api(`/api/modems/${imei}/credentials`)).json()) as { password: string };
    expect(shown.password).toBe(body.password);
    const listed = (await (await farm.api('/api/modems')).json()) as {
      imei: string;
      proxy: { password: string };
    }[];
    expect(listed.find((m) => m.imei === imei)?.proxy.password).toBe(body.password);

    // a modem served by another host: the command waits for that host, this one never claims it
    const hostB = new Store({ sql: farm.db.sql, url: farm.db.url, hostId: 'host-b' });
    await hostB.registerHost();
    const foreign = '356000000000777';
    await hostB.upsertModem({ imei: foreign, usbPath: '9-9' });
    await hostB.allocate(foreign);
    // the allocation (a row of its own) is notified like the modem's columns: its row comes live
    await watcher.next(rowWith(foreign, (await farm.store.credentials(foreign)).password));
    const rotated = await farm.store.rotateCredentials(foreign, 'test');
    // nothing but the allocation changed (no host acts on it): its notification brings the row live
    await watcher.next(rowWith(foreign, rotated.password));
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await farm.store.command(rotated.commandId))?.status).toBe('pending');
    const claimed = await hostB.claimCommands();
    expect(claimed.map((c) => [c.id, c.kind])).toEqual([[rotated.commandId, 'credentials']]);
    await hostB.finishCommand(rotated.commandId, true, {});
  });
});
