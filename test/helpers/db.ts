import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { openSql, type Sql } from '../../src/store/database.js';

export interface TestDatabase {
  name: string;
  url: string;
  sql: Sql;
  drop(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A fresh database cloned from the migrated template of this run. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const pg = inject('pg');
  if (!pg) throw new Error('this test needs PostgreSQL (unset MODEMFLEET_TEST_NO_DB)');
  const name = `${pg.prefix}${randomBytes(5).toString('hex')}`;
  const admin = openSql(pg.adminUrl, { max: 1 });
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        await admin.unsafe(`create database "${name}" template "${pg.template}"`);
        break;
      } catch (err) {
        // 55006: the template is briefly in use by a concurrent clone
        if ((err as { code?: string }).code !== '55006' || attempt > 50) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    await admin.end();
  }
  const url = withDatabase(pg.adminUrl, name);
  const sql = openSql(url, { max: 4 });
  return {
    name,
    url,
    sql,
    async drop() {
      await sql.end({ timeout: 2 });
      const a = openSql(pg.adminUrl, { max: 1 });
      try {
        await a.unsafe(`drop database if exists "${name}" with (force)`);
      } finally {
        await a.end();
      }
    },
  };
}

/** Modems whose journal is not exactly 1..seq (a hole, a gap at the end, or a missing row). */
export function journalHoles(sql: Sql): Promise<{ imei: string }[]> {
  return sql<{ imei: string }[]>`
    select m.imei from modems m left join modem_transitions t on t.imei = m.imei
    group by m.imei, m.seq having count(t.seq) <> m.seq or coalesce(max(t.seq), 0) <> m.seq`;
}
