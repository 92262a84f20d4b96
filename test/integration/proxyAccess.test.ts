import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/**
 * The access store against a real PostgreSQL: logins, allowlist and limits are validated, stored
 * with a `credentials` command for the serving host, refused with a reason where the backend cannot
 * serve them, and served to the host without the expired logins.
 */

let db: TestDatabase;
let store: Store;
const MINE = '356000000000001';
const PAIR = '356000000000002';

const commands = async (imei: string): Promise<string[]> =>
  (await db.sql<{ kind: string }[]>`select kind from modem_commands where imei = ${imei} order by id`).map(
    (r) => r.kind,
  );

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'farm-3proxy' });
  await store.registerHost({ proxyBackend: '3proxy' });
  await store.upsertModem({ imei: MINE });
  await store.allocate(MINE);
  const pair = new Store({ sql: db.sql, url: db.url, hostId: 'farm-pair' });
  await pair.registerHost({ proxyBackend: 'microsocks+tinyproxy' });
  await pair.upsertModem({ imei: PAIR });
  await pair.allocate(PAIR);
});
afterAll(async () => {
  await db?.drop();
});

describe('logins', () => {
  it('adds, lists (own login first), refuses duplicates and bad input, removes', async () => {
    const own = await store.credentials(MINE);
    const { login, commandId } = await store.addLogin(
      MINE,
      { username: 'alice', expiresAt: '2099-01-01T00:00:00Z' },
      'test',
    );
    expect(login).toMatchObject({
      username: 'alice',
      ports: ['http', 'socks'],
      primary: false,
      expired: false,
    });
    expect(login.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(login.expiresAt?.toISOString()).toBe('2099-01-01T00:00:00.000Z');
    expect(commandId).toBeGreaterThan(0);
    await store.addLogin(MINE, { username: 'bob', password: 'bob-secret-123', ports: ['socks'] }, 'test');
    const list = await store.logins(MINE);
    expect(list.map((l) => [l.username, l.primary, l.ports])).toEqual([
      [own.username, true, ['http', 'socks']],
      ['alice', false, ['http', 'socks']],
      ['bob', false, ['socks']],
    ]);
    await expect(store.addLogin(MINE, { username: 'alice' }, 'test')).rejects.toMatchObject({
      code: 'login_exists',
    });
    await expect(store.addLogin(MINE, { username: own.username }, 'test')).rejects.toMatchObject({
      code: 'login_exists',
    });
    await expect(store.addLogin(MINE, { username: 'x y', password: 'short' }, 'test')).rejects.toMatchObject({
      code: 'invalid_login',
      message: expect.stringMatching(/username:.*; password:/) as unknown,
    });
    await expect(
      store.addLogin(MINE, { username: 'late', expiresAt: '2001-01-01T00:00:00Z' }, 'test'),
    ).rejects.toMatchObject({ code: 'invalid_login', message: 'expiresAt: must be in the future' });
    await expect(store.addLogin('356000000000009', { username: 'alice' }, 'test')).rejects.toMatchObject({
      code: 'unknown_modem',
    });
    await store.removeLogin(MINE, 'bob', 'test');
    await expect(store.removeLogin(MINE, 'bob', 'test')).rejects.toMatchObject({ code: 'unknown_login' });
    await expect(store.removeLogin(MINE, own.username, 'test')).rejects.toMatchObject({
      code: 'primary_login',
    });
    // every change queued one credentials command, nothing else
    expect(await commands(MINE)).toEqual(['credentials', 'credentials', 'credentials']);
  });

  it('microsocks+tinyproxy: an HTTP login is fine, a SOCKS one is refused and nothing is written', async () => {
    await expect(store.addLogin(PAIR, { username: 'carol' }, 'test')).rejects.toMatchObject({
      code: 'backend_unsupported',
      message: expect.stringMatching(/microsocks takes one login/) as unknown,
    });
    expect(await commands(PAIR)).toEqual([]);
    const { login } = await store.addLogin(PAIR, { username: 'carol', ports: ['http'] }, 'test');
    expect(login.ports).toEqual(['http']);
  });

  it('the host is served the logins not expired yet, with their expiry on its own clock', async () => {
    await store.addLogin(MINE, { username: 'soon', password: 'soon-secret-12', ports: ['http'] }, 'test');
    await db.sql`update modem_logins set expires_at = now() + interval '30 seconds' where username = 'soon'`;
    await db.sql`insert into modem_logins (imei, username, password, expires_at, created_by)
      values (${MINE}, 'gone', 'gone-secret-12', now() - interval '1 second', 'test')`;
    const served = await store.servedAccess(MINE);
    expect(served.logins.map((l) => l.username)).toEqual(['alice', 'soon']);
    const soon = served.logins.find((l) => l.username === 'soon');
    expect(soon?.expiresAtMs).toBeGreaterThan(Date.now() + 25_000);
    expect(soon?.expiresAtMs).toBeLessThan(Date.now() + 35_000);
    expect((await store.logins(MINE)).find((l) => l.username === 'gone')?.expired).toBe(true);
  });
});

describe('allowlist and limits', () => {
  it('stored canonical; bad entries refused with every problem and nothing written', async () => {
    expect((await store.access(MINE)).allowlist).toEqual([]);
    const set = await store.setAllowlist(MINE, ['10.1.2.3', '2001:DB8::/32', '10.1.2.3/32'], 'test');
    expect(set.allowlist).toEqual(['10.1.2.3/32', '2001:db8::/32']);
    await expect(store.setAllowlist(MINE, ['10.0.0.1/8', '::/0'], 'test')).rejects.toMatchObject({
      code: 'invalid_allowlist',
      message: expect.stringMatching(/\[0\].*host bits.*\[1\].*whole address space/) as unknown,
    });
    expect((await store.access(MINE)).allowlist).toEqual(['10.1.2.3/32', '2001:db8::/32']);
    expect((await store.servedAccess(MINE)).allowlist).toEqual(['10.1.2.3/32', '2001:db8::/32']);
  });

  it('limits in kbit/s; null lifts one; bad values refused', async () => {
    const set = await store.setLimits(MINE, { downloadKbps: 8000, uploadKbps: 2000 }, 'test');
    expect(set.limits).toEqual({ downloadKbps: 8000, uploadKbps: 2000 });
    expect(set.allowlist).toEqual(['10.1.2.3/32', '2001:db8::/32']);
    await expect(store.setLimits(MINE, { downloadKbps: 0 }, 'test')).rejects.toMatchObject({
      code: 'invalid_limits',
    });
    expect((await store.setLimits(MINE, { uploadKbps: 512 }, 'test')).limits).toEqual({
      downloadKbps: null,
      uploadKbps: 512,
    });
    expect((await store.servedAccess(MINE)).limits).toEqual({ downloadKbps: null, uploadKbps: 512 });
  });
});
