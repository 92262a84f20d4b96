import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

const cli = (args: string[], env: Record<string, string> = {}) =>
  execa('node', ['bin/modemfleet.js', ...args], {
    reject: false,
    env: { DATABASE_URL: db.url, MODEMFLEET_HOST_ID: 'cli-host', ...env },
  });

describe('modemfleet CLI', () => {
  it('migrate, status and a command against a real database', async () => {
    const migrate = await cli(['migrate']);
    expect(migrate.exitCode).toBe(0);
    expect(migrate.stdout).toBe('database schema is up to date');

    await db.sql`insert into hosts (id, name) values ('cli-host', 'cli-host')`;
    await db.sql`insert into modems (imei, host_id, state, operator, rssi, wan_ip) values ('356000000000042', 'cli-host', 'online', 'Vodafone', -71, '10.64.0.9')`;
    const status = await cli(['status']);
    expect(status.exitCode).toBe(0);
    expect(status.stdout).toMatch(
      /^IMEI\s+STATE\s+FOR\s+PUBLIC\s+ADDRESS\s+HTTP\s+SOCKS\s+OPERATOR\s+SIGNAL/,
    );
    expect(status.stdout).toMatch(
      /356000000000042\s+online\s+\d+s\s+-\s+10\.64\.0\.9\s+-\s+-\s+Vodafone\s+###\. -71/,
    );
    const json = await cli(['status', '--json']);
    expect(JSON.parse(json.stdout)).toEqual([
      expect.objectContaining({ imei: '356000000000042', state: 'online', wanIp: '10.64.0.9' }),
    ]);

    const rotate = await cli(['rotate', '356000000000042']);
    expect(rotate.exitCode).toBe(0);
    const { id } = JSON.parse(rotate.stdout) as { id: number };
    const [row] = await db.sql<{ kind: string; status: string; requested_by: string }[]>`
      select kind, status, requested_by from modem_commands where id = ${id}`;
    expect(row).toMatchObject({ kind: 'rotate', status: 'pending' });
    expect(row?.requested_by).toMatch(/^cli:/);
  });

  it('bad input: clear message, documented exit code, nothing stored', async () => {
    const cases: [string[], Record<string, string>, number, RegExp][] = [
      [['rotate', '12345'], {}, 2, /imei must be 15 digits/],
      [['rotate', '356000000000099'], {}, 6, /no modem with imei 356000000000099/],
      [['rotate'], {}, 2, /usage: modemfleet rotate IMEI/],
      [['status', '--bogus'], {}, 2, /Unknown option '--bogus'/],
      [['explode'], {}, 2, /unknown command 'explode'/],
      [
        ['status'],
        { DATABASE_URL: 'postgres://u:pw@localhost:notaport/x' },
        3,
        /DATABASE_URL has an invalid port|DATABASE_URL is not a valid URL/,
      ],
      [['status', '--config', '/nonexistent.json'], {}, 3, /nonexistent\.json: cannot read/],
      [['run', '--config', '/nonexistent.json'], {}, 3, /nonexistent\.json: cannot read/],
    ];
    for (const [args, env, code, message] of cases) {
      const r = await cli(args, env);
      expect({ args, code: r.exitCode }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
    }
    const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from modem_commands`;
    expect(row?.n).toBe(1);
  });

  it('quota: set, shown, reset, cleared, an expiry; bad input changes nothing; status shows the traffic', async () => {
    const imei = '356000000000044';
    await db.sql`insert into hosts (id, name) values ('cli-host', 'cli-host') on conflict do nothing`;
    await db.sql`insert into modems (imei, host_id, state) values (${imei}, 'cli-host', 'online')`;
    const show = async () =>
      JSON.parse((await cli(['quota', imei])).stdout) as { quota: Record<string, unknown> | null };
    expect(await show()).toEqual({ imei, quota: null });
    const set = await cli(['quota', imei, '10GB', '--period', 'month', '--month-start', '15']);
    expect(set.exitCode).toBe(0);
    expect(JSON.parse(set.stdout)).toMatchObject({
      imei,
      quota: { bytes: 10_000_000_000, period: 'month', monthStartDay: 15, used: 0, closed: null },
    });
    const bad: [string[], number, RegExp][] = [
      [['quota', imei, '10XB', '--period', 'day'], 2, /BYTES must be a size like 10GB/],
      [['quota', imei, '10GB'], 2, /--period must be one of day, month, total/],
      [
        ['quota', imei, '10GB', '--period', 'day', '--month-start', '3'],
        2,
        /monthStartDay: only for period "month"/,
      ],
      [
        ['quota', imei, '10GB', '--period', 'month', '--month-start', '30'],
        2,
        /monthStartDay: must be a day from 1 to 28/,
      ],
      [['quota', imei, '--clear', '--reset'], 2, /one action at a time/],
      [['quota', imei, '--expires', 'soon'], 2, /--expires: must be an ISO 8601 time/],
      [['quota', '356000000000099', '1GB', '--period', 'day'], 6, /no modem with imei/],
    ];
    const results = await Promise.all(bad.map(([args]) => cli(args)));
    bad.forEach(([args, code, message], i) => {
      expect({ args, code: results[i]?.exitCode }).toEqual({ args, code });
      expect(results[i]?.stderr).toMatch(message);
    });
    expect((await show()).quota).toMatchObject({ bytes: 10_000_000_000, monthStartDay: 15 });
    expect((await cli(['quota', imei, '--reset'])).exitCode).toBe(0);
    const expires = await cli(['quota', imei, '--expires', '2030-01-31T00:00:00Z']);
    expect(JSON.parse(expires.stdout)).toMatchObject({ quota: { expiresAt: '2030-01-31T00:00:00.000Z' } });
    expect((await cli(['quota', imei, '--clear'])).exitCode).toBe(0);
    expect((await cli(['quota', imei, '--clear'])).exitCode).toBe(6);
    expect((await cli(['quota', imei, '--no-expiry'])).exitCode).toBe(0);
    expect(await show()).toEqual({ imei, quota: null });
    // today's bytes in status (what the owning host sampled)
    const at = new Date();
    await db.sql`select record_traffic(array[${imei}], array['cli-host'], array[${at}]::timestamptz[],
      array[${at}]::timestamptz[], array['abcdef01'], array[1234567]::bigint[], array[890]::bigint[])`;
    const status = await cli(['status']);
    expect(status.stdout).toMatch(new RegExp(`${imei}.*↓1\\.23 MB ↑890 B\\s+↓1\\.23 MB ↑890 B$`, 'm'));
    const json = JSON.parse((await cli(['status', '--json'])).stdout) as { imei: string; traffic: unknown }[];
    expect(json.find((m) => m.imei === imei)?.traffic).toEqual({
      today: { download: 1_234_567, upload: 890 },
      month: { download: 1_234_567, upload: 890 },
    });
  }, 240_000);

  it('credentials: shown, rotated (a credentials command for the modem host); bad input changes nothing', async () => {
    const imei = '356000000000043';
    await db.sql`insert into hosts (id, name) values ('cli-host', 'cli-host') on conflict do nothing`;
    await db.sql`insert into modems (imei, host_id, state) values (${imei}, 'cli-host', 'online')`;
    const noPorts = await cli(['credentials', imei]);
    expect(noPorts.exitCode).toBe(1);
    expect(noPorts.stderr).toMatch(/has no proxy ports yet/);
    await db.sql`insert into allocations (host_id, imei, slot, http_port, socks_port, routing_table, iface_id, proxy_user, proxy_password)
                 values ('cli-host', ${imei}, 7, 20007, 30007, 10007, 7, 'u0123456789', 'old-password-0123')`;
    const shown = await cli(['credentials', imei]);
    expect(shown.exitCode).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      imei,
      host: 'cli-host',
      username: 'u0123456789',
      password: 'old-password-0123',
      rotatedAt: null,
    });
    const rotated = await cli(['credentials', imei, '--rotate', '--wait', '0']);
    expect(rotated.exitCode).toBe(0);
    const out = JSON.parse(rotated.stdout) as { password: string; command: { id: number; status: string } };
    expect(out.password).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(out.command.status).toBe('pending');
    const [row] = await db.sql<{ proxy_password: string; kind: string }[]>`
      select a.proxy_password, c.kind from allocations a, modem_commands c
      where a.imei = ${imei} and c.id = ${out.command.id}`;
    expect(row).toEqual({ proxy_password: out.password, kind: 'credentials' });

    const commands = async () =>
      (await db.sql`select count(*)::int as n from modem_commands`)[0]?.['n'] as number;
    const before = await commands();
    for (const [args, code, message] of [
      [['credentials', '356000000000099', '--rotate'], 6, /no modem with imei 356000000000099/],
      [['credentials', '12345'], 2, /imei must be 15 digits/],
      [['credentials', imei, '--wait', '3'], 2, /--wait goes with --rotate/],
    ] as const) {
      const r = await cli([...args]);
      expect({ args, code: r.exitCode }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
    }
    expect(await commands()).toBe(before);
    expect((await db.sql`select proxy_password from allocations where imei = ${imei}`)[0]).toEqual({
      proxy_password: out.password,
    });
  });

  it('token create|list|revoke: shown once, stored hashed; bad input changes nothing', async () => {
    const created = await cli(['token', 'create', 'noc', '--scope', 'read-only']);
    expect(created.exitCode).toBe(0);
    const { token } = JSON.parse(created.stdout) as { token: string };
    expect(token).toMatch(/^mft_[A-Za-z0-9_-]{43}$/);
    const [stored] = await db.sql<{ token_hash: Buffer; scope: string }[]>`
      select token_hash, scope from api_tokens where name = 'noc'`;
    expect(stored?.scope).toBe('read-only');
    expect(stored?.token_hash.equals(createHash('sha256').update(token).digest())).toBe(true);
    const reseller = await cli([
      'token',
      'create',
      'acme',
      '--scope',
      'reseller',
      '--modems',
      '356000000000042',
    ]);
    expect(reseller.exitCode).toBe(0);
    expect(JSON.parse(reseller.stdout)).toMatchObject({ scope: 'reseller', modems: ['356000000000042'] });

    const count = async () => (await db.sql`select count(*)::int as n from api_tokens`)[0]?.['n'] as number;
    const before = await count();
    for (const [args, code, message] of [
      [
        ['token', 'create', 'x', '--scope', 'root'],
        2,
        /unknown scope 'root'; expected one of admin, read-only, reseller/,
      ],
      [['token', 'create', 'Bad/Name', '--scope', 'admin'], 2, /token name 'Bad\/Name' is malformed/],
      [
        ['token', 'create', 'y', '--scope', 'reseller', '--modems', '356000000000099'],
        6,
        /no modem with imei 356000000000099/,
      ],
      [['token', 'create', 'z', '--scope', 'reseller'], 2, /needs its modems/],
      [['token', 'create', 'noc', '--scope', 'admin'], 1, /a token named 'noc' exists already/],
      [['token', 'revoke', 'nobody'], 6, /no active token named 'nobody'/],
      [['token', 'explode', 'x'], 2, /usage: modemfleet token/],
    ] as const) {
      const r = await cli([...args]);
      expect({ args, code: r.exitCode }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
      expect(r.stdout).toBe('');
    }
    expect(await count()).toBe(before);

    const list = await cli(['token', 'list']);
    expect(list.exitCode).toBe(0);
    expect(list.stdout).toMatch(/^NAME\s+SCOPE\s+MODEMS/);
    expect(list.stdout).toMatch(/noc\s+read-only\s+all/);
    expect(list.stdout).toMatch(/acme\s+reseller\s+1/);
    expect(list.stdout).not.toContain(token);
    const revoked = await cli(['token', 'revoke', 'noc']);
    expect(revoked.exitCode).toBe(0);
    const [row] = await db.sql`select revoked_at from api_tokens where name = 'noc'`;
    expect(row?.['revoked_at']).toBeInstanceOf(Date);
    expect((await cli(['token', 'revoke', 'noc'])).exitCode).toBe(6);
  });

  it('--help for every command', async () => {
    const top = await cli(['help']);
    expect(top.exitCode).toBe(0);
    for (const command of [
      'run',
      'demo',
      'sim',
      'migrate',
      'status',
      'rotate',
      'reset',
      'disable',
      'enable',
      'doctor',
      'credentials',
      'token',
    ]) {
      expect(top.stdout).toContain(`  ${command}`);
      const h = await cli([command, '--help']);
      expect(h.exitCode).toBe(0);
      expect(h.stdout).toMatch(new RegExp(`^usage: modemfleet ${command}`));
    }
  });
});
