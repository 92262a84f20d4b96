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
    ]) {
      expect(top.stdout).toContain(`  ${command}`);
      const h = await cli([command, '--help']);
      expect(h.exitCode).toBe(0);
      expect(h.stdout).toMatch(new RegExp(`^usage: modemfleet ${command}`));
    }
  });
});
