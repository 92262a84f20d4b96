import { cp, mkdtemp, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { defaultMigrationsDir, loadMigrations, migrate, verifyMigrations } from '../../src/store/migrate.js';

let db: TestDatabase;
let fresh: TestDatabase;
let dir: string;

beforeAll(async () => {
  db = await createTestDatabase();
  fresh = await createTestDatabase();
  await fresh.sql.unsafe('drop schema public cascade; create schema public');
  dir = await mkdtemp(join(tmpdir(), 'mf-migrations-'));
});
afterAll(async () => {
  await db?.drop();
  await fresh?.drop();
  await rm(dir, { recursive: true, force: true });
});

/** `0003` when two migrations exist: the file name a new migration would take. */
async function nextNumber(offset = 1): Promise<string> {
  const count = (await loadMigrations(defaultMigrationsDir())).length;
  return String(count + offset).padStart(4, '0');
}

async function copyMigrations(): Promise<string> {
  const target = await mkdtemp(join(dir, 'sql-'));
  await cp(defaultMigrationsDir(), target, { recursive: true });
  return target;
}

describe('migrations', () => {
  it('are idempotent: a second run applies nothing', async () => {
    const again = await migrate(db.sql);
    expect(again.applied).toEqual([]);
    const rows = await db.sql<
      { checksum: string }[]
    >`select checksum from schema_migrations order by version`;
    const files = await loadMigrations();
    expect(rows.map((r) => r.checksum)).toEqual(files.map((f) => f.checksum));
  });

  it('two concurrent migrators on an empty database: each file applied exactly once', async () => {
    const [a, b] = await Promise.all([migrate(fresh.sql), migrate(fresh.sql)]);
    const files = (await loadMigrations()).map((f) => f.file);
    expect([...a.applied, ...b.applied].sort()).toEqual(files.sort());
    const rows = await fresh.sql`select count(*)::int as n from schema_migrations`;
    expect(rows[0]?.['n']).toBe(files.length);
  });

  it('refuses a migration whose checksum changed, naming the file, and changes nothing', async () => {
    const changed = await copyMigrations();
    await appendFile(join(changed, '0001_schema.sql'), '\n-- edited after release\n');
    const before = await db.sql`select * from schema_migrations order by version`;
    await expect(migrate(db.sql, { dir: changed })).rejects.toThrow(
      /0001_schema\.sql: changed after it was applied/,
    );
    await expect(verifyMigrations(db.sql, changed)).rejects.toThrow(/0001_schema\.sql/);
    expect(await db.sql`select * from schema_migrations order by version`).toEqual(before);
  });

  it('refuses a gap in the numbering, naming the file', async () => {
    const gap = await copyMigrations();
    const [expected, skipped] = [await nextNumber(), await nextNumber(2)];
    await writeFile(join(gap, `${skipped}_later.sql`), 'select 1;');
    await expect(loadMigrations(gap)).rejects.toThrow(
      new RegExp(`${skipped}_later\\.sql: gap in migration numbering, expected ${expected}_\\*\\.sql`),
    );
    await expect(migrate(db.sql, { dir: gap })).rejects.toThrow(/gap/);
  });

  it('refuses stray file names in sql/', async () => {
    const stray = await copyMigrations();
    await writeFile(join(stray, '2_Oops.sql'), 'select 1;');
    await expect(loadMigrations(stray)).rejects.toThrow(
      /2_Oops\.sql: migration files are named NNNN_name\.sql/,
    );
  });

  it('a failing migration rolls back and names its file; the next run works once fixed', async () => {
    const broken = await copyMigrations();
    const next = await nextNumber();
    await writeFile(
      join(broken, `${next}_broken.sql`),
      'create table ok_table (id int);\nselect no_such_function();',
    );
    await expect(migrate(db.sql, { dir: broken })).rejects.toThrow(
      new RegExp(`${next}_broken\\.sql: .*no_such_function`),
    );
    const t = await db.sql`select to_regclass('ok_table') as t`;
    expect(t[0]?.['t']).toBeNull();
    const versions = await db.sql`select max(version)::int as v from schema_migrations`;
    expect(versions[0]?.['v']).toBe(Number(next) - 1);
  });

  it('0004 applies while the previous version keeps journaling: no deadlock, no append lost', async () => {
    const older = await copyMigrations();
    await rm(join(older, '0004_journal.sql'));
    const live = await createTestDatabase();
    try {
      await live.sql.unsafe('drop schema public cascade; create schema public');
      await migrate(live.sql, { dir: older });
      // 40 modems journaling through 0001's append_transitions(jsonb), as a host not yet upgraded
      const imeis = Array.from({ length: 40 }, (_, i) => String(354100000000000 + i));
      let seq = 0;
      let running = true;
      const failures: string[] = [];
      const appender = (async () => {
        while (running) {
          seq++;
          const batch = imeis.map((imei) => ({
            imei,
            seq,
            to_state: 'online.serving',
            event: 'old',
            at: new Date().toISOString(),
          }));
          await live.sql`select * from append_transitions(${live.sql.json(batch)}::jsonb)`.catch(
            (err: Error & { code?: string }) => failures.push(err.code ?? err.message),
          );
        }
      })();
      try {
        await new Promise((r) => setTimeout(r, 200));
        await migrate(live.sql);
        await new Promise((r) => setTimeout(r, 200));
      } finally {
        running = false;
        await appender;
      }
      expect(failures).toEqual([]);
      const [row] = await live.sql<{ n: number; m: number }[]>`
        select count(*)::int as n, count(distinct imei)::int as m from modem_transitions`;
      expect(row).toEqual({ n: 40 * seq, m: 40 });
    } finally {
      await live.drop();
    }
  });

  it('refuses a database migrated by a newer version', async () => {
    const older = await mkdtemp(join(dir, 'empty-'));
    await expect(verifyMigrations(db.sql, older)).rejects.toThrow(
      /0001_schema\.sql, which this version of modemfleet does not ship/,
    );
  });
});
