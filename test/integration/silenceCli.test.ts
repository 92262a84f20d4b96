import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

const IMEI = '356000000000042';
let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  await db.sql`insert into hosts (id, name) values ('cli-host', 'cli-host')`;
  await db.sql`insert into modems (imei, host_id) values (${IMEI}, 'cli-host')`;
});
afterAll(async () => {
  await db?.drop();
});

const cli = (args: string[]) =>
  execa('node', ['bin/modemfleet.js', ...args], {
    reject: false,
    env: { DATABASE_URL: db.url, MODEMFLEET_HOST_ID: 'cli-host' },
  });
const silences = () =>
  db.sql<{ imei: string; until: Date; set_by: string }[]>`select imei, until, set_by from modem_silences`;

describe('modemfleet silence', () => {
  it('silences a modem for a duration or until a time, and ends it with --off', async () => {
    const before = Date.now();
    const r = await cli(['silence', IMEI, '--until', '2h']);
    expect(r.exitCode).toBe(0);
    const out = JSON.parse(r.stdout) as { imei: string; until: string };
    expect(out.imei).toBe(IMEI);
    const until = Date.parse(out.until);
    expect(until).toBeGreaterThanOrEqual(before + 7_200_000);
    expect(until).toBeLessThan(Date.now() + 7_200_000);
    const [row] = await silences();
    expect(row?.until.getTime()).toBe(until);
    expect(row?.set_by).toMatch(/^cli:/);

    const at = new Date(Date.now() + 86_400_000).toISOString();
    expect((await cli(['silence', IMEI, '--until', at])).exitCode).toBe(0);
    expect((await silences())[0]?.until.toISOString()).toBe(at);

    const off = await cli(['silence', IMEI, '--off']);
    expect({ code: off.exitCode, out: JSON.parse(off.stdout) as unknown }).toEqual({
      code: 0,
      out: { imei: IMEI, until: null },
    });
    expect(await silences()).toEqual([]);
  });

  it('bad input: clear message, documented exit code, nothing stored', async () => {
    const cases: [string[], number, RegExp][] = [
      [['silence', IMEI], 2, /--until or --off/],
      [['silence', '123', '--until', '1h'], 2, /imei must be 15 digits/],
      [['silence', IMEI, '--until', 'later'], 2, /--until must be a duration/],
      [['silence', IMEI, '--until', '2020-01-01T00:00Z'], 2, /until must be a time in the future/],
      [['silence', IMEI, '--until', '2000h'], 2, /within 30 days/],
      [['silence', '356000000000099', '--until', '1h'], 6, /no modem with imei 356000000000099/],
      [['silence', IMEI, '--off'], 6, /is not silenced/],
    ];
    for (const [args, code, message] of cases) {
      const r = await cli(args);
      expect({ args, code: r.exitCode }).toEqual({ args, code });
      expect(r.stderr).toMatch(message);
    }
    expect(await silences()).toEqual([]);
    const help = await cli(['silence', '--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/^usage: modemfleet silence IMEI --until DURATION\|ISO-TIME/);
  });
});
