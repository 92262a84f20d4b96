import postgres from 'postgres';

/**
 * The two things the embedded server's supervisor (src/process/embeddedCluster.ts) asks of a
 * PostgreSQL server while starting it, here because only src/store/ speaks to PostgreSQL.
 */

/** The server at `url` accepts a connection and answers `select 1` (within ~2 s). */
export async function serverAnswers(url: string): Promise<boolean> {
  const sql = postgres(url, { max: 1, connect_timeout: 2, fetch_types: false, onnotice: () => {} });
  try {
    await sql`select 1`;
    return true;
  } catch {
    return false;
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** Creates database `name` on the server at `url` (a maintenance database) unless it exists. */
export async function ensureDatabase(url: string, name: string): Promise<void> {
  const sql = postgres(url, { max: 1, fetch_types: false, onnotice: () => {} });
  try {
    const rows = await sql`select 1 from pg_database where datname = ${name}`;
    if (rows.length === 0) await sql.unsafe(`create database "${name.replace(/"/g, '""')}"`);
  } finally {
    await sql.end({ timeout: 2 });
  }
}
