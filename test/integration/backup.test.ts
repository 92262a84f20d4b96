import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync, gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { restoreCommand } from '../../src/cli/backup.js';
import { exitCodeFor } from '../../src/cli/exitCodes.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { writeBackup } from '../../src/store/backup.js';
import { openSql, type Sql } from '../../src/store/database.js';
import { defaultMigrationsDir, loadMigrations, migrate } from '../../src/store/migrate.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

// `modemfleet backup` and `modemfleet restore` run as real processes against real databases.
const HOST = 'bk-host';
const M1 = '356000000000101';
const M2 = '356000000000102';
const M3 = '356000000000103';

let dir: string;
let source: TestDatabase;
let backupFile: string;
const extra: { drop(): Promise<void> }[] = [];

/** A database with nothing in it (not cloned from the migrated template). */
async function emptyDatabase(): Promise<{ url: string; sql: Sql; drop(): Promise<void> }> {
  const pg = inject('pg');
  if (!pg) throw new Error('this test needs PostgreSQL');
  const name = `${pg.prefix}${randomBytes(5).toString('hex')}`;
  const admin = openSql(pg.adminUrl, { max: 1 });
  await admin.unsafe(`create database "${name}"`);
  await admin.end();
  const u = new URL(pg.adminUrl);
  u.pathname = `/${name}`;
  const sql = openSql(u.toString(), { max: 2 });
  const db = {
    url: u.toString(),
    sql,
    async drop() {
      await sql.end({ timeout: 2 });
      const a = openSql(pg.adminUrl, { max: 1 });
      await a.unsafe(`drop database if exists "${name}" with (force)`);
      await a.end();
    },
  };
  extra.push(db);
  return db;
}

async function clonedDatabase(): Promise<TestDatabase> {
  const db = await createTestDatabase();
  extra.push(db);
  return db;
}

const cli = (args: string[], url: string, env: Record<string, string> = {}) =>
  execa('node', ['bin/modemfleet.js', ...args], {
    reject: false,
    env: { DATABASE_URL: url, MODEMFLEET_HOST_ID: HOST, ...env },
  });

/** Every table's rows (each as JSON, sorted) and every sequence's position. */
async function snapshot(sql: Sql): Promise<Record<string, string[]>> {
  const tables = await sql<{ name: string }[]>`
    select relname as name from pg_class
    where relnamespace = (select oid from pg_namespace where nspname = current_schema()) and relkind = 'r'
    order by relname`;
  const out: Record<string, string[]> = {};
  for (const { name } of tables) {
    const rows = await sql.unsafe<{ r: string }[]>(`select to_jsonb(t)::text as r from "${name}" t`);
    out[name] = rows.map((r) => r.r).sort();
  }
  const sequences = await sql<{ name: string; last: string | null }[]>`
    select sequencename as name, last_value::text as last from pg_sequences
    where schemaname = current_schema() order by sequencename`;
  out['(sequences)'] = sequences.map((s) => `${s.name}=${s.last}`);
  return out;
}

/** The decompressed backup's lines, and where each table's rows are (`rows` up to its `\.`). */
function sections(text: string): { lines: string[]; at: Record<string, { rows: number; end: number }> } {
  const lines = text.split('\n');
  const header = JSON.parse(lines[0] ?? '') as { tables: { name: string }[] };
  const at: Record<string, { rows: number; end: number }> = {};
  let i = 1;
  for (const { name } of header.tables) {
    const rows = i;
    while (lines[i] !== '\\.') i++;
    at[name] = { rows, end: i };
    i++;
  }
  return { lines, at };
}

/** A farm's worth of everything: hosts, modems, journal, allocations, commands, addresses, ... */
async function populate(db: { sql: Sql; url: string }): Promise<void> {
  const store = new Store({ sql: db.sql, url: db.url, hostId: HOST });
  await store.registerHost({ proxyHost: 'proxy.example.net' });
  await store.upsertModem({
    imei: M1,
    usbPath: '1-1.2',
    operator: 'Vodafone "DE"',
    iccid: '8949000000000000001',
  });
  await store.upsertModem({ imei: M2, usbPath: '1-1.3', operator: 'Telekom\tDE' });
  await store.upsertModem({ imei: M3, usbPath: '1-1.4' });
  const at = new Date('2026-11-30T10:00:00Z');
  await store.appendTransitions([
    { imei: M1, seq: 1, from: null, to: 'detecting', event: 'start', at },
    { imei: M1, seq: 2, from: 'detecting', to: 'initializing.sim', event: 'probe.ok', at },
    {
      imei: M1,
      seq: 3,
      from: 'initializing.sim',
      to: 'online.serving',
      event: 'connected',
      at,
      detail: { note: 'line\nbreak, tab\there, back\\slash, quote", unicode ✓' },
      wanIp: '10.64.0.9',
    },
    { imei: M2, seq: 1, from: null, to: 'detecting', event: 'start', at },
    { imei: M2, seq: 2, from: 'detecting', to: 'error', event: 'probe.failed', at, reason: 'no_sim' },
  ]);
  await store.allocate(M1);
  await store.allocate(M2);
  await store.rotateCredentials(M1, 'test');
  await store.insertCommand(M1, 'rotate', 'cli:test');
  await store.insertCommand(M2, 'reset', 'cli:test');
  const [claimed] = await store.claimCommands();
  if (claimed) await store.finishCommand(claimed.id, true, { publicIp: '198.51.100.7', attempts: 1 });
  await store.recordAddress(M1, '198.51.100.7', '10.64.0.9');
  await store.recordAddress(M1, '198.51.100.8', '10.64.0.10');
  await store.setSchedule(M1, { intervalSeconds: 600, jitterSeconds: 60 }, 'cli:test');
  await store.setSchedule(M2, { off: true }, 'cli:test');
  await store.createToken({ name: 'reseller-a', scope: 'reseller', modems: [M1, M2], createdBy: 'test' });
  await store.createToken({ name: 'viewer', scope: 'read-only', createdBy: 'test' });
  await store.revokeToken('viewer');
  await store.createWebhook(
    {
      name: 'ops',
      url: 'https://hooks.example.net/modemfleet',
      secret: 's'.repeat(32),
      format: 'json',
      chatId: null,
      kinds: ['modem_error', 'no_sim'],
      severities: ['warning', 'critical'],
      resolved: true,
    },
    'test',
  );
  await store.setSilence(M3, new Date(Date.now() + 3_600_000), 'cli:test');
  const alert = await store.raiseAlert({ imei: M2, kind: 'no_sim', severity: 'critical', message: 'no SIM' });
  await store.resolveAlert(alert);
  await store.raiseAlert({ imei: M3, kind: 'no_sim', severity: 'warning', message: 'silenced one' });
  await store.ackAlert(alert, 'cli:test');
  await store.recordHealth([
    { imei: M1, rssi: -71, rsrp: -98, rsrq: -11, sinr: 12, operator: 'Vodafone', technology: 'LTE' },
    { imei: M2, rssi: null, operator: null },
  ]);
  await store.createRotationLink(M1, 'test');
  // traffic accounting (sql/0016, sql/0017): a quota with an expiry, samples with their rollups
  await store.setQuota(M1, { bytes: 10_000_000, period: 'month' }, 'cli:test');
  await store.setExpiry(M1, new Date('2027-01-01T00:00:00Z'), 'cli:test');
  await store.recordTraffic([
    { imei: M1, host: HOST, at, minute: at, instance: 'abcd0001', download: 5_000, upload: 700 },
    {
      imei: M1,
      host: HOST,
      at: new Date(at.getTime() + 60_000),
      minute: new Date(at.getTime() + 60_000),
      instance: 'abcd0001',
      download: 9_000,
      upload: 900,
    },
  ]);
  // a host that stopped cleanly (a restore is refused while a farm's heartbeat is fresh)
  await store.stopHost();
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-backup-'));
  source = await createTestDatabase();
  await populate(source);
  backupFile = join(dir, 'farm.backup.gz');
});
afterAll(async () => {
  for (const db of extra) await db.drop().catch(() => undefined);
  await source?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('modemfleet backup', () => {
  it('writes every table (rows counted), mode 0600, and never over an existing file without --force', async () => {
    const r = await cli(['backup', backupFile], source.url);
    expect({ code: r.exitCode, err: r.stderr }).toEqual({ code: 0, err: '' });
    const out = JSON.parse(r.stdout) as { file: string; bytes: number; rows: Record<string, number> };
    expect(out.file).toBe(backupFile);
    const s = await stat(backupFile);
    expect(s.mode & 0o777).toBe(0o600);
    expect(out.bytes).toBe(s.size);
    const counts: Record<string, number> = {};
    for (const [table, rows] of Object.entries(await snapshot(source.sql)))
      if (table !== '(sequences)') counts[table] = rows.length;
    expect(out.rows).toEqual(counts);
    for (const table of [
      'modems',
      'modem_transitions',
      'modem_addresses',
      'rotation_schedules',
      'api_tokens',
      'webhooks',
      'webhook_deliveries',
      'allocations',
      'modem_quotas',
      'traffic_cursors',
      'traffic_minute',
      'traffic_hour',
      'traffic_day',
    ])
      expect(out.rows[table]).toBeGreaterThan(0);

    const before = await readFile(backupFile);
    const again = await cli(['backup', backupFile], source.url);
    expect(again.exitCode).toBe(9);
    expect(again.stderr).toBe(
      `modemfleet backup: ${backupFile} exists: choose another name, or --force to replace it`,
    );
    expect((await readFile(backupFile)).equals(before)).toBe(true);

    const forced = await cli(['backup', backupFile, '--force'], source.url);
    expect(forced.exitCode).toBe(0);
    expect((await stat(backupFile)).mode & 0o777).toBe(0o600);
    expect((await readFile(backupFile)).equals(before)).toBe(false); // a new createdAt
    expect(await readdir(dir)).toEqual(['farm.backup.gz']); // no temporary file left

    const nowhere = await cli(['backup', join(dir, 'missing', 'x.gz')], source.url);
    expect(nowhere.exitCode).toBe(9);
    expect(nowhere.stderr).toMatch(/^modemfleet backup: cannot write .*missing\/x\.gz: ENOENT/);
  }, 240_000);
});

describe('writeBackup', () => {
  it('a write that fails in the middle of a table: that error, and the connection usable (the COPY cancelled, not left half read)', async () => {
    const db = await clonedDatabase();
    await db.sql`insert into hosts (id, name) values (${HOST}, ${HOST})`;
    await db.sql`insert into modems (imei, host_id) values (${M1}, ${HOST})`;
    await db.sql`insert into modem_health (imei, at, rssi, operator)
      select ${M1}, now() - g * interval '1 second', -70, 'Vodafone' from generate_series(1, 50000) g`;
    const sql = openSql(db.url, { max: 1 }); // one connection: the next query needs the same one
    let written = 0;
    const full = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, done) {
        written += chunk.length;
        setTimeout(() => done(written > 200_000 ? new Error('ENOSPC: no space left on device') : null), 1);
      },
    });
    try {
      await expect(writeBackup(sql, full)).rejects.toThrow('ENOSPC: no space left on device');
      const answer = await Promise.race([
        sql`select 1 as one`,
        new Promise((resolve) => setTimeout(() => resolve('no answer'), 10_000)),
      ]);
      expect(answer).toEqual([{ one: 1 }]);
    } finally {
      await sql.end({ timeout: 1 });
    }
  });
});

describe('modemfleet restore', () => {
  it('into an empty database: every row equal, sequences continue where they were', async () => {
    const target = await emptyDatabase();
    const r = await cli(['restore', backupFile], target.url);
    expect({ code: r.exitCode, err: r.stderr }).toEqual({ code: 0, err: '' });
    expect(JSON.parse(r.stdout)).toMatchObject({ file: backupFile, migrated: [] });
    const expected = await snapshot(source.sql);
    expect(await snapshot(target.sql)).toEqual(expected);

    // the next id of each serial table follows the source's, no collision; triggers are back on
    const [top] = await source.sql<{ command: number; alert: number; token: number }[]>`
      select (select max(id) from modem_commands)::int as command, (select max(id) from alerts)::int as alert,
             (select max(id) from api_tokens)::int as token`;
    const store = new Store({ sql: target.sql, url: target.url, hostId: HOST });
    expect(await store.insertCommand(M2, 'enable', 'cli:test')).toBe((top?.command ?? 0) + 1);
    const alert = await store.raiseAlert({
      imei: M1,
      kind: 'modem_error',
      severity: 'critical',
      message: 'x',
    });
    expect(alert).toBe((top?.alert ?? 0) + 1);
    const [queued] = await target.sql<{ n: number }[]>`
      select count(*)::int as n from webhook_deliveries where alert_id = ${alert}`;
    expect(queued?.n).toBe(1); // alerts_queue_deliveries fires again
    expect((await store.createToken({ name: 'after', scope: 'admin', createdBy: 'test' })).stored.id).toBe(
      (top?.token ?? 0) + 1,
    );
  });

  it('into a populated database at the same version: replaced by the backup, sequences reset', async () => {
    const target = await clonedDatabase();
    const store = new Store({ sql: target.sql, url: target.url, hostId: 'other-host' });
    await store.registerHost();
    await store.upsertModem({ imei: '356000000000999' });
    for (let i = 0; i < 20; i++) await store.insertCommand('356000000000999', 'reset', 'x').catch(() => 0);
    await store.stopHost();
    const r = await cli(['restore', backupFile], target.url);
    expect({ code: r.exitCode, err: r.stderr }).toEqual({ code: 0, err: '' });
    expect(await snapshot(target.sql)).toEqual(await snapshot(source.sql));
  });

  it('bad files: a clear one-line error, exit 9, and the database unchanged', async () => {
    const target = await clonedDatabase();
    await populate(target);
    const before = await snapshot(target.sql);
    const { lines, at } = sections(gunzipSync(await readFile(backupFile)).toString('utf8'));
    const gz = async (name: string, body: string[]): Promise<string> => {
      const path = join(dir, name);
      await writeFile(path, gzipSync(body.join('\n')));
      return path;
    };
    const edited = (edit: (copy: string[]) => void): string[] => {
      const copy = [...lines];
      edit(copy);
      return copy;
    };
    const whole = await readFile(backupFile);
    const truncated = join(dir, 'truncated.gz');
    await writeFile(truncated, whole.subarray(0, Math.floor(whole.length * 0.6)));
    const flipped = join(dir, 'flipped.gz');
    const bytes = Buffer.from(whole);
    const mid = Math.floor(bytes.length / 2);
    bytes[mid] = (bytes[mid] ?? 0) ^ 0xff;
    await writeFile(flipped, bytes);
    const plain = join(dir, 'plain.txt');
    await writeFile(plain, 'just some text\n');
    const alerts = at['alerts'];
    const health = at['modem_health'];
    if (!alerts || !health) throw new Error('no alerts or modem_health in the backup');
    const badRow = edited((c) => {
      c[alerts.rows] = (c[alerts.rows] ?? '').replace(/\t(critical|warning)\t/, '\tterrible\t');
    });
    const extraRow = edited((c) => c.splice(health.rows, 0, c[health.rows] ?? ''));
    const wrongCount = edited((c) => {
      const t = JSON.parse(c.at(-2) ?? '') as { rows: Record<string, number> };
      t.rows['alerts'] = (t.rows['alerts'] ?? 0) + 1;
      c[c.length - 2] = JSON.stringify(t);
    });
    const injected = edited((c) => {
      c[0] = (c[0] ?? '').replace('"name":"hosts"', '"name":"hosts; drop table modems"');
    });
    const cut = lines.slice(0, alerts.end + 1).join('\n') + '\n';
    const healthRows = health.end - health.rows;
    const alertRows = alerts.end - alerts.rows;

    const cases: [string, string, RegExp][] = [
      ['missing', join(dir, 'nope.gz'), /nope\.gz: no such file$/],
      ['a directory', dir, /: not a regular file$/],
      ['not gzip', plain, /plain\.txt: not a modemfleet backup \(not gzip data\)$/],
      [
        'gzip of something else',
        await gz('other.gz', ['hello', 'world', '']),
        /not a modemfleet backup \(its first line is not JSON\)$/,
      ],
      ['truncated', truncated, /truncated\.gz: damaged or truncated \(unexpected end of file\)$/],
      [
        'damaged',
        flipped,
        /flipped\.gz: (damaged or truncated|the database refuses|.* rows, the backup says|the file ends|a row of)/,
      ],
      [
        'a row the database refuses',
        await gz('badrow.gz', badRow),
        /the database refuses the rows of alerts: .*alerts_severity_check/,
      ],
      [
        'a row more than counted',
        await gz('extrarow.gz', extraRow),
        new RegExp(`modem_health has ${healthRows + 1} rows, the backup says ${healthRows}$`),
      ],
      [
        'counts that do not match',
        await gz('count.gz', wrongCount),
        new RegExp(`alerts has ${alertRows} rows, the backup says ${alertRows + 1}$`),
      ],
      [
        'a table name that is SQL',
        await gz('inject.gz', injected),
        /not a modemfleet backup \(bad table name\)$/,
      ],
      ['cut after a table', await gz('cut.gz', [cut]), /the file ends in the rows of /],
    ];
    // in this process (the command's own code), then a few through the real command line
    const config = loadConfig({ env: { DATABASE_URL: target.url, MODEMFLEET_HOST_ID: HOST } });
    for (const [what, file, message] of cases) {
      const err = await restoreCommand(config, file, silentLogger).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect({ what, code: exitCodeFor(err) }).toEqual({ what, code: 9 });
      expect(err?.message).toMatch(message);
      expect(err?.message).not.toMatch(/\n/);
    }
    for (const [what, file, message] of cases.filter(([w]) =>
      ['missing', 'truncated', 'a row the database refuses'].includes(w),
    )) {
      const r = await cli(['restore', file], target.url);
      expect({ what, code: r.exitCode }).toEqual({ what, code: 9 });
      expect(r.stderr.split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^modemfleet restore: /);
      expect(r.stderr).toMatch(message);
    }
    expect(await snapshot(target.sql)).toEqual(before);
    // and the database is fine afterwards: the real backup restores
    expect((await cli(['restore', backupFile], target.url)).exitCode).toBe(0);
  }, 240_000);

  it('a backup newer than this modemfleet, or with a migration not ours: exit 5, naming both, nothing changed', async () => {
    const target = await clonedDatabase();
    await populate(target);
    const before = await snapshot(target.sql);
    const shipped = await loadMigrations();
    const latest = shipped.at(-1);
    const latestFile = `${String(latest?.version).padStart(4, '0')}_${latest?.name}.sql`;
    const lines = gunzipSync(await readFile(backupFile))
      .toString('utf8')
      .split('\n');
    const header = JSON.parse(lines[0] ?? '') as {
      schemaVersion: number;
      migrations: { version: number; name: string; checksum: string }[];
    };
    const next = shipped.length + 1;
    const newer = {
      ...header,
      schemaVersion: next,
      migrations: [
        ...header.migrations,
        { version: next, name: 'from_the_future', checksum: 'a'.repeat(64) },
      ],
    };
    const changed = {
      ...header,
      migrations: header.migrations.map((m) => (m.version === 5 ? { ...m, checksum: 'b'.repeat(64) } : m)),
    };
    const write = async (name: string, h: unknown): Promise<string> => {
      const path = join(dir, name);
      await writeFile(path, gzipSync([JSON.stringify(h), ...lines.slice(1)].join('\n')));
      return path;
    };
    const r1 = await cli(['restore', await write('newer.gz', newer)], target.url);
    expect(r1.exitCode).toBe(5);
    expect(r1.stderr).toMatch(
      `the backup's schema is ${String(next).padStart(4, '0')}_from_the_future.sql, newer than this modemfleet's (${latestFile}): upgrade modemfleet first, then restore`,
    );
    const r2 = await cli(['restore', await write('changed.gz', changed)], target.url);
    expect(r2.exitCode).toBe(5);
    expect(r2.stderr).toMatch(
      /the backup's migration 0005_journal_append\.sql is not this modemfleet's 0005_journal_append\.sql \(its checksum differs\)/,
    );
    expect(await snapshot(target.sql)).toEqual(before);
  }, 240_000);

  it('an older backup: restored at its version, then migrated, into an empty or a newer database', async () => {
    const shipped = await loadMigrations();
    const at = shipped.length - 2;
    const oldDir = join(dir, 'old-sql');
    await mkdir(oldDir);
    for (const m of shipped.slice(0, at))
      await copyFile(join(defaultMigrationsDir(), m.file), join(oldDir, m.file));
    const old = await emptyDatabase();
    await migrate(old.sql, { dir: oldDir });
    await old.sql`insert into hosts (id, name, stopped_at) values (${HOST}, ${HOST}, now())`;
    await old.sql`insert into modems (imei, host_id, state, wan_ip) values (${M1}, ${HOST}, 'online', '10.64.0.9')`;
    await old.sql`insert into alerts (imei, kind, severity, message) values (${M1}, 'no_sim', 'warning', 'old alert')`;
    const oldFile = join(dir, 'old.gz');
    const b = await cli(['backup', oldFile], old.url);
    expect(b.exitCode).toBe(0);
    expect(JSON.parse(b.stdout)).toMatchObject({ schemaVersion: at });

    const later = shipped.slice(at).map((m) => m.file);
    const newer = await clonedDatabase();
    await populate(newer); // its rows go: its schema is rebuilt at the backup's version
    for (const target of [await emptyDatabase(), newer]) {
      const r = await cli(['restore', oldFile], target.url);
      expect({ code: r.exitCode, err: r.stderr }).toEqual({ code: 0, err: '' });
      expect(JSON.parse(r.stdout)).toMatchObject({ schemaVersion: at, migrated: later });
      const applied = await target.sql<
        { version: number }[]
      >`select version from schema_migrations order by version`;
      expect(applied.map((a) => a.version)).toEqual(shipped.map((m) => m.version));
      expect(await target.sql`select imei, state, host(wan_ip) as wan from modems`).toEqual([
        { imei: M1, state: 'online', wan: '10.64.0.9' },
      ]);
      expect(await target.sql`select message from alerts`).toEqual([{ message: 'old alert' }]);
      expect(await target.sql`select count(*)::int as n from api_tokens`).toEqual([{ n: 0 }]);
    }
  }, 240_000);

  it('refused while a farm uses the database (a fresh heartbeat, a LISTEN connection): exit 4, nothing changed', async () => {
    const target = await clonedDatabase();
    await populate(target);
    const live = new Store({ sql: target.sql, url: target.url, hostId: 'bk-live' });
    await live.registerHost();
    const before = await snapshot(target.sql);
    const r = await cli(['restore', backupFile], target.url);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toMatch(
      /^modemfleet restore: a farm is using this database \(host bk-live, heartbeat \d+ s ago\): stop it first/,
    );
    await live.stopHost();
    const listener = openSql(target.url, { max: 1, application: 'modemfleet-listen' });
    try {
      await listener`select 1`;
      const r2 = await cli(['restore', backupFile], target.url);
      expect(r2.exitCode).toBe(4);
      expect(r2.stderr).toMatch(/a farm is using this database \(1 LISTEN connection of a modemfleet\)/);
    } finally {
      await listener.end();
    }
    const after = await snapshot(target.sql);
    expect(after).toEqual({ ...before, hosts: after['hosts'] }); // only bk-live's stop was recorded
    expect((await cli(['restore', backupFile], target.url)).exitCode).toBe(0);
  }, 240_000);

  it('usage', async () => {
    const r = await cli(['restore'], source.url);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/usage: modemfleet restore FILE/);
    const h = await cli(['backup', '--help'], source.url);
    expect(h.stdout).toMatch(/^usage: modemfleet backup FILE \[--force\]/);
  });
});
