import { createHash, randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { IMEI_PATTERN } from './types.js';

/**
 * Rotation links: a secret per modem that queues a rotation without the API token (the URL is
 * handed to a customer or a script). Only the secret's SHA-256 is stored; creating a link revokes
 * the modem's previous one; a revoked link stops working at once.
 */

/** 32 random bytes, base64url: 43 characters. */
export const ROTATION_SECRET_PATTERN = /^[A-Za-z0-9_-]{43}$/;

const hash = (secret: string): Buffer => createHash('sha256').update(secret).digest();

export async function createRotationLink(sql: Sql, imei: string, createdBy: string): Promise<string> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  const secret = randomBytes(32).toString('base64url');
  await sql.begin(async (tx) => {
    // the modem row lock serialises concurrent creations (one active link per modem)
    const found = await tx`select 1 from modems where imei = ${imei} for update`;
    if (found.length === 0) throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
    await tx`update rotation_links set revoked_at = now() where imei = ${imei} and revoked_at is null`;
    await tx`insert into rotation_links (imei, secret_hash, created_by)
               values (${imei}, ${hash(secret)}, ${createdBy.slice(0, 128) || 'unknown'})`;
  });
  return secret;
}

/** Revoke the modem's active link; false when it had none. */
export async function revokeRotationLink(sql: Sql, imei: string): Promise<boolean> {
  const rows = await sql`
    update rotation_links set revoked_at = now() where imei = ${imei} and revoked_at is null returning id`;
  return rows.length > 0;
}

/** The IMEI an active link belongs to (and marks it used), or null for an unknown or revoked one. */
export async function resolveRotationLink(sql: Sql, secret: string): Promise<string | null> {
  if (!ROTATION_SECRET_PATTERN.test(secret)) return null;
  const [row] = await sql<{ imei: string }[]>`
    update rotation_links set last_used_at = now()
    where secret_hash = ${hash(secret)} and revoked_at is null returning imei`;
  return row?.imei ?? null;
}

/** Whether the modem has an active link, and since when (never the secret: it is not stored). */
export async function rotationLinkInfo(
  sql: Sql,
  imei: string,
): Promise<{ createdAt: Date; createdBy: string; lastUsedAt: Date | null } | null> {
  const [row] = await sql<{ created_at: Date; created_by: string; last_used_at: Date | null }[]>`
    select created_at, created_by, last_used_at from rotation_links where imei = ${imei} and revoked_at is null`;
  return row ? { createdAt: row.created_at, createdBy: row.created_by, lastUsedAt: row.last_used_at } : null;
}
