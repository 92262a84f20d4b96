import { createHash, randomBytes } from 'node:crypto';
import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { errorCode, SQLSTATE } from './pgErrors.js';
import { IMEI_PATTERN } from './types.js';

/**
 * Scoped API tokens besides MODEMFLEET_API_TOKEN (the admin token of the configuration). `admin`
 * may do everything; `read-only` reads everything but passwords and sends nothing; `reseller` sees
 * and commands only its modems (their passwords included). Only a token's SHA-256 is stored: the
 * token is shown once, when created. A revoked token is refused from the next request on.
 */
export const TOKEN_SCOPES = ['admin', 'read-only', 'reseller'] as const;
export type TokenScope = (typeof TOKEN_SCOPES)[number];

export const TOKEN_NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,62}$/;

/** Created tokens: `mft_` + 32 random bytes, base64url (47 characters, header-safe). */
const TOKEN_PATTERN = /^mft_[A-Za-z0-9_-]{43}$/;

/** How many modems one reseller token may hold. */
export const MAX_TOKEN_MODEMS = 10_000;

export interface StoredToken {
  id: number;
  name: string;
  scope: TokenScope;
  /** The modems of a reseller token (empty for the others). */
  modems: string[];
  createdBy: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

/** What a valid token grants (the inspector's view of it). */
export interface TokenGrant {
  id: number;
  name: string;
  scope: TokenScope;
  modems: string[];
}

export const hashToken = (token: string): Buffer => createHash('sha256').update(token).digest();

export const isTokenScope = (v: unknown): v is TokenScope =>
  typeof v === 'string' && (TOKEN_SCOPES as readonly string[]).includes(v);

function checkInput(name: string, scope: string, modems: readonly string[]): void {
  if (!TOKEN_NAME_PATTERN.test(name))
    throw new ModemfleetError(
      'invalid_token',
      `token name '${name.slice(0, 64)}' is malformed: 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
    );
  if (!isTokenScope(scope))
    throw new ModemfleetError(
      'invalid_token',
      `unknown scope '${scope.slice(0, 32)}'; expected one of ${TOKEN_SCOPES.join(', ')}`,
    );
  if (scope === 'reseller' && modems.length === 0)
    throw new ModemfleetError('invalid_token', 'a reseller token needs its modems (--modems IMEI,IMEI,...)');
  if (scope !== 'reseller' && modems.length > 0)
    throw new ModemfleetError(
      'invalid_token',
      `a ${scope} token sees every modem; --modems is for reseller tokens`,
    );
  if (modems.length > MAX_TOKEN_MODEMS)
    throw new ModemfleetError('invalid_token', `at most ${MAX_TOKEN_MODEMS} modems per token`);
  const bad = modems.find((m) => !IMEI_PATTERN.test(m));
  if (bad !== undefined)
    throw new ModemfleetError('invalid_imei', `'${bad.slice(0, 20)}' is not an IMEI (15 digits)`);
}

/**
 * A new token: checked (name, scope, modems that exist) and stored in one transaction, so bad input
 * changes nothing. Returns the token itself: the only time it is shown.
 */
export async function createToken(
  sql: Sql,
  input: { name: string; scope: string; modems?: readonly string[]; createdBy: string },
): Promise<{ token: string; stored: StoredToken }> {
  const modems = [...new Set(input.modems ?? [])].sort();
  checkInput(input.name, input.scope, modems);
  const token = `mft_${randomBytes(32).toString('base64url')}`;
  try {
    const id = await sql.begin(async (tx) => {
      if (modems.length > 0) {
        const found = await tx<{ imei: string }[]>`select imei from modems where imei in ${tx(modems)}`;
        const known = new Set(found.map((r) => r.imei));
        const unknown = modems.filter((m) => !known.has(m));
        if (unknown.length > 0)
          throw new ModemfleetError('unknown_modem', `no modem with imei ${unknown.slice(0, 5).join(', ')}`);
      }
      const [row] = await tx<{ id: string }[]>`
        insert into api_tokens (name, scope, token_hash, created_by)
        values (${input.name}, ${input.scope}, ${hashToken(token)}, ${input.createdBy.slice(0, 128) || 'unknown'})
        returning id`;
      if (!row) throw new Error('token insert returned nothing');
      if (modems.length > 0)
        await tx`insert into api_token_modems ${tx(modems.map((imei) => ({ token_id: row.id, imei })))}`;
      return Number(row.id);
    });
    const stored = (await listTokens(sql)).find((t) => t.id === id);
    if (!stored) throw new Error('the created token was not found');
    return { token, stored };
  } catch (err) {
    if (errorCode(err) === SQLSTATE.uniqueViolation)
      throw new ModemfleetError('token_exists', `a token named '${input.name}' exists already`, {
        cause: err,
      });
    throw err;
  }
}

interface TokenRow {
  id: string;
  name: string;
  scope: TokenScope;
  modems: string[] | null;
  created_by: string;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

/** Every token (revoked ones too), oldest first; never a token or its hash. */
export async function listTokens(sql: Sql): Promise<StoredToken[]> {
  const rows = await sql<TokenRow[]>`
    select t.id, t.name, t.scope, t.created_by, t.created_at, t.last_used_at, t.revoked_at,
           (select json_agg(m.imei order by m.imei) from api_token_modems m where m.token_id = t.id) as modems
    from api_tokens t order by t.id`;
  return rows.map((r) => ({
    id: Number(r.id),
    name: r.name,
    scope: r.scope,
    modems: r.modems ?? [],
    createdBy: r.created_by,
    createdAt: r.created_at,
    lastUsedAt: r.last_used_at,
    revokedAt: r.revoked_at,
  }));
}

/** Revoke a token by name; `unknown_token` when there is no active token of that name. */
export async function revokeToken(sql: Sql, name: string): Promise<StoredToken> {
  if (!TOKEN_NAME_PATTERN.test(name))
    throw new ModemfleetError('invalid_token', `token name '${name.slice(0, 64)}' is malformed`);
  const rows = await sql<{ id: string }[]>`
    update api_tokens set revoked_at = now() where name = ${name} and revoked_at is null returning id`;
  const id = rows[0] ? Number(rows[0].id) : undefined;
  const stored = (await listTokens(sql)).find((t) => t.id === id);
  if (!stored) throw new ModemfleetError('unknown_token', `no active token named '${name}'`);
  return stored;
}

/**
 * What a presented token grants, or null (unknown, malformed or revoked). Marks it used at most
 * once a minute (a write per request would be a write per page refresh).
 */
export async function resolveToken(sql: Sql, token: string): Promise<TokenGrant | null> {
  if (!TOKEN_PATTERN.test(token)) return null;
  const [row] = await sql<(TokenRow & { stale: boolean })[]>`
    select t.id, t.name, t.scope,
           (t.last_used_at is null or t.last_used_at < now() - interval '1 minute') as stale,
           (select json_agg(m.imei order by m.imei) from api_token_modems m where m.token_id = t.id) as modems
    from api_tokens t where t.token_hash = ${hashToken(token)} and t.revoked_at is null`;
  if (!row) return null;
  if (row.stale) await sql`update api_tokens set last_used_at = now() where id = ${row.id}`;
  return { id: Number(row.id), name: row.name, scope: row.scope, modems: row.modems ?? [] };
}

/** Of these token ids, the ones still active (the hub drops the clients of the others). */
export async function activeTokenIds(sql: Sql, ids: readonly number[]): Promise<Set<number>> {
  if (ids.length === 0) return new Set();
  const rows = await sql<{ id: string }[]>`
    select id from api_tokens where id in ${sql(ids.map(String))} and revoked_at is null`;
  return new Set(rows.map((r) => Number(r.id)));
}
