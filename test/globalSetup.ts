import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { EmbeddedCluster } from '../src/process/embeddedCluster.js';
import { freePort } from '../src/util/ports.js';
import { openSql } from '../src/store/database.js';
import { migrate } from '../src/store/migrate.js';

export interface TestPostgres {
  /** URL of a database on the test server whose user may CREATE DATABASE. */
  adminUrl: string;
  /** Migrated template the per-file databases are cloned from. */
  template: string;
  /** Prefix of every database this run creates. */
  prefix: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    pg: TestPostgres | null;
  }
}

/**
 * One PostgreSQL per test run: DATABASE_URL when set, else an embedded cluster in var/test-postgres.
 * Migrations are applied once to a template; each test file clones its own database from it
 * (test/helpers/db.ts). Everything is dropped and stopped afterwards, also when tests fail.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  if (process.env['MODEMFLEET_TEST_NO_DB'] === '1') {
    project.provide('pg', null);
    return async () => {};
  }
  let cluster: EmbeddedCluster | undefined;
  let adminUrl = process.env['DATABASE_URL'];
  if (!adminUrl) {
    cluster = new EmbeddedCluster({
      dir: join(import.meta.dirname, '..', 'var', 'test-postgres'),
      port: await freePort(),
      settings: { fsync: 'off', synchronous_commit: 'off', full_page_writes: 'off', max_connections: '300' },
    });
    await cluster.start();
    adminUrl = cluster.url;
  }
  const prefix = cluster ? 'mft_' : `mft_${process.pid}_`;
  const template = `${prefix}template`;
  const admin = openSql(adminUrl, { max: 1 });
  try {
    const stale = await admin<
      { datname: string }[]
    >`select datname from pg_database where datname like ${`${prefix}%`}`;
    for (const { datname } of stale) await admin.unsafe(`drop database if exists "${datname}" with (force)`);
    await admin.unsafe(`create database "${template}"`);
  } finally {
    await admin.end();
  }
  const templateUrl = new URL(adminUrl);
  templateUrl.pathname = `/${template}`;
  const tpl = openSql(templateUrl.toString(), { max: 1 });
  try {
    await migrate(tpl);
  } finally {
    await tpl.end();
  }
  project.provide('pg', { adminUrl, template, prefix });

  return async () => {
    try {
      const sql = openSql(adminUrl, { max: 1 });
      try {
        const mine = await sql<
          { datname: string }[]
        >`select datname from pg_database where datname like ${`${prefix}%`}`;
        for (const { datname } of mine) await sql.unsafe(`drop database if exists "${datname}" with (force)`);
      } finally {
        await sql.end();
      }
    } finally {
      await cluster?.stop();
    }
  };
}
