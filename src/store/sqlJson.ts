import type { JSONValue, Sql } from 'postgres';

/** A JSON parameter (postgres.js serialises it once; a pre-stringified value would be double-encoded). */
export function json(sql: Sql, value: unknown): ReturnType<Sql['json']> {
  return sql.json(value as JSONValue);
}
