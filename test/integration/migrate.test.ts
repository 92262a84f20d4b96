import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { migrate, loadMigrations } from '../../src/store/migrate.js';

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
});

describe('migrations', () => {
  it('are idempotent', async () => {
    const again = await migrate(db.sql);
    expect(again.applied).toEqual([]);
    const rows = await db.sql`select version from schema_migrations`;
    expect(rows.length).toBe((await loadMigrations()).length);
  });
});
