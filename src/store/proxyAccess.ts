import { randomBytes } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import {
  ACCESS_LIMITS,
  LOGIN_PORTS,
  loginProblems,
  parseAllowlist,
  parseLimits,
  type LoginPort,
  type LoginRequest,
  type ProxyAccess,
  type SpeedLimits,
} from '../proxyAccess.js';
import { ModemfleetError } from '../util/errors.js';
import { IMEI_PATTERN } from './types.js';

/**
 * A modem's access beyond its own login (src/proxyAccess.ts): logins, allowlist, speed limits.
 * Every change is written with a `credentials` command in one transaction, as a password rotation
 * is: the host that serves the modem re-reads all of it and applies it. Bad input is refused with
 * every problem and writes nothing; so is what the modem's backend cannot serve.
 */

export type ProxyBackendName = '3proxy' | 'microsocks+tinyproxy';

/** A login as the API shows it (the modem's own one too, `primary`). */
export interface LoginView {
  username: string;
  password: string;
  ports: LoginPort[];
  expiresAt: Date | null;
  expired: boolean;
  /** The modem's own login (allocations): rotated with the credentials API, never removed. */
  primary: boolean;
  createdAt: Date | null;
}

export interface AccessView {
  imei: string;
  allowlist: string[];
  limits: SpeedLimits;
  updatedAt: Date | null;
}

interface ModemRow {
  host_id: string | null;
  proxy_backend: ProxyBackendName | null;
  proxy_user: string | null;
  proxy_password: string | null;
}

const by = (requestedBy: string): string => requestedBy.slice(0, 128) || 'unknown';

/** The modem (`unknown_modem`), its host's backend and its own login, locked for a change. */
async function modemFor(sql: Sql | TransactionSql, imei: string, lock: boolean): Promise<ModemRow> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  if (lock) await sql`select 1 from modems where imei = ${imei} for update`;
  const [row] = await sql<ModemRow[]>`
    select m.host_id, h.proxy_backend, a.proxy_user, a.proxy_password
    from modems m left join hosts h on h.id = m.host_id
      left join allocations a on a.imei = m.imei and a.host_id = m.host_id
    where m.imei = ${imei}`;
  if (!row) throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
  return row;
}

async function queueApply(tx: TransactionSql, imei: string, requestedBy: string): Promise<number> {
  const [command] = await tx<{ id: string }[]>`
    insert into modem_commands (imei, kind, requested_by)
    values (${imei}, 'credentials', ${by(requestedBy)}) returning id`;
  if (!command) throw new Error('queueing the access change wrote nothing');
  return Number(command.id);
}

interface LoginRow {
  username: string;
  password: string;
  ports: LoginPort[];
  expires_at: Date | null;
  created_at: Date;
  expired: boolean;
}

/** The modem's logins: its own first, then the others by name (expired ones too, marked). */
export async function listLogins(sql: Sql, imei: string): Promise<LoginView[]> {
  const modem = await modemFor(sql, imei, false);
  const rows = await sql<LoginRow[]>`
    select username, password, to_jsonb(ports) as ports, expires_at, created_at,
      coalesce(expires_at <= now(), false) as expired
    from modem_logins where imei = ${imei} order by username`;
  const own: LoginView[] =
    modem.proxy_user && modem.proxy_password
      ? [
          {
            username: modem.proxy_user,
            password: modem.proxy_password,
            ports: [...LOGIN_PORTS],
            expiresAt: null,
            expired: false,
            primary: true,
            createdAt: null,
          },
        ]
      : [];
  return [
    ...own,
    ...rows.map((r) => ({
      username: r.username,
      password: r.password,
      ports: r.ports,
      expiresAt: r.expires_at,
      expired: r.expired,
      primary: false,
      createdAt: r.created_at,
    })),
  ];
}

/**
 * A new login: `invalid_login` (400) for bad input or an expiry not in the future,
 * `login_exists` (409) for a name in use (the modem's own included), `too_many_logins` (409),
 * `backend_unsupported` (409) for a SOCKS login on microsocks, which serves one login only.
 */
export async function addLogin(
  sql: Sql,
  imei: string,
  request: unknown,
  requestedBy: string,
): Promise<{ login: LoginView; commandId: number }> {
  const problems = loginProblems(request);
  if (problems.length) throw new ModemfleetError('invalid_login', problems.join('; '));
  const r = request as LoginRequest;
  const ports = r.ports ? [...r.ports] : [...LOGIN_PORTS];
  const password = r.password ?? randomBytes(18).toString('base64url');
  return sql.begin(async (tx) => {
    const modem = await modemFor(tx, imei, true);
    if (modem.proxy_backend === 'microsocks+tinyproxy' && ports.includes('socks'))
      throw new ModemfleetError(
        'backend_unsupported',
        `modem ${imei} is served by microsocks and tinyproxy: microsocks takes one login (the modem's own), so a second login can only be an HTTP one (tinyproxy): ask for "ports": ["http"]`,
      );
    if (r.username === modem.proxy_user)
      throw new ModemfleetError('login_exists', `${r.username} is the modem's own login`);
    if (r.expiresAt !== undefined) {
      const [ok] = await tx<{ future: boolean }[]>`select ${r.expiresAt}::timestamptz > now() as future`;
      if (!ok?.future) throw new ModemfleetError('invalid_login', 'expiresAt: must be in the future');
    }
    const [count] = await tx<
      { n: number }[]
    >`select count(*)::int as n from modem_logins where imei = ${imei}`;
    if ((count?.n ?? 0) >= ACCESS_LIMITS.loginsPerModem)
      throw new ModemfleetError(
        'too_many_logins',
        `modem ${imei} has ${count?.n ?? 0} logins (at most ${ACCESS_LIMITS.loginsPerModem}); remove one first`,
      );
    const [row] = await tx<LoginRow[]>`
      insert into modem_logins (imei, username, password, ports, expires_at, created_by)
      values (${imei}, ${r.username}, ${password}, array(select jsonb_array_elements_text(${tx.json(ports)}::jsonb)), ${r.expiresAt ?? null}, ${by(requestedBy)})
      on conflict (imei, username) do nothing
      returning username, password, to_jsonb(ports) as ports, expires_at, created_at, false as expired`;
    if (!row) throw new ModemfleetError('login_exists', `modem ${imei} already has a login ${r.username}`);
    const commandId = await queueApply(tx, imei, requestedBy);
    return {
      login: {
        username: row.username,
        password: row.password,
        ports: row.ports,
        expiresAt: row.expires_at,
        expired: false,
        primary: false,
        createdAt: row.created_at,
      },
      commandId,
    };
  });
}

/** Removes a login (`unknown_login` 404; `primary_login` 409 for the modem's own). */
export async function removeLogin(
  sql: Sql,
  imei: string,
  username: string,
  requestedBy: string,
): Promise<{ commandId: number }> {
  return sql.begin(async (tx) => {
    const modem = await modemFor(tx, imei, true);
    if (username === modem.proxy_user)
      throw new ModemfleetError(
        'primary_login',
        `${username} is the modem's own login: rotate its password (credentials) instead`,
      );
    const rows =
      await tx`delete from modem_logins where imei = ${imei} and username = ${username} returning 1`;
    if (rows.length === 0)
      throw new ModemfleetError('unknown_login', `modem ${imei} has no login ${username.slice(0, 32)}`);
    return { commandId: await queueApply(tx, imei, requestedBy) };
  });
}

interface AccessRow {
  allowlist: string[];
  download_kbps: number | null;
  upload_kbps: number | null;
  updated_at: Date;
}

const toView = (imei: string, row: AccessRow | undefined): AccessView => ({
  imei,
  allowlist: row?.allowlist ?? [],
  limits: { downloadKbps: row?.download_kbps ?? null, uploadKbps: row?.upload_kbps ?? null },
  updatedAt: row?.updated_at ?? null,
});

export async function getAccess(sql: Sql, imei: string): Promise<AccessView> {
  await modemFor(sql, imei, false);
  const [row] = await sql<AccessRow[]>`
    select to_jsonb(allowlist::text[]) as allowlist, download_kbps, upload_kbps, updated_at
    from modem_access where imei = ${imei}`;
  return toView(imei, row);
}

/** Replaces the allowlist (`invalid_allowlist` 400 with every bad entry). */
export async function setAllowlist(
  sql: Sql,
  imei: string,
  value: unknown,
  requestedBy: string,
): Promise<AccessView & { commandId: number }> {
  const parsed = parseAllowlist(value);
  if ('problems' in parsed) throw new ModemfleetError('invalid_allowlist', parsed.problems.join('; '));
  return sql.begin(async (tx) => {
    await modemFor(tx, imei, true);
    const [row] = await tx<AccessRow[]>`
      insert into modem_access (imei, allowlist, updated_by)
      values (${imei}, array(select jsonb_array_elements_text(${tx.json(parsed.allowlist)}::jsonb)::cidr), ${by(requestedBy)})
      on conflict (imei) do update set allowlist = excluded.allowlist,
        updated_by = excluded.updated_by, updated_at = now()
      returning to_jsonb(allowlist::text[]) as allowlist, download_kbps, upload_kbps, updated_at`;
    return { ...toView(imei, row), commandId: await queueApply(tx, imei, requestedBy) };
  });
}

/** Sets both limits (`invalid_limits` 400); a direction left out or null has none. */
export async function setLimits(
  sql: Sql,
  imei: string,
  value: unknown,
  requestedBy: string,
): Promise<AccessView & { commandId: number }> {
  const parsed = parseLimits(value);
  if ('problems' in parsed) throw new ModemfleetError('invalid_limits', parsed.problems.join('; '));
  const { downloadKbps, uploadKbps } = parsed.limits;
  return sql.begin(async (tx) => {
    await modemFor(tx, imei, true);
    const [row] = await tx<AccessRow[]>`
      insert into modem_access (imei, download_kbps, upload_kbps, updated_by)
      values (${imei}, ${downloadKbps}, ${uploadKbps}, ${by(requestedBy)})
      on conflict (imei) do update set download_kbps = excluded.download_kbps,
        upload_kbps = excluded.upload_kbps, updated_by = excluded.updated_by, updated_at = now()
      returning to_jsonb(allowlist::text[]) as allowlist, download_kbps, upload_kbps, updated_at`;
    return { ...toView(imei, row), commandId: await queueApply(tx, imei, requestedBy) };
  });
}

/**
 * What the serving host applies: the logins not expired yet, with their expiry on this host's
 * clock (the database's `now()` is the reference, so a skewed host clock moves nothing), the
 * allowlist and the limits.
 */
export async function servedAccess(sql: Sql, imei: string): Promise<ProxyAccess> {
  const localNow = Date.now();
  const rows = await sql<
    { username: string; password: string; ports: LoginPort[]; left_ms: number | null }[]
  >`
    select username, password, to_jsonb(ports) as ports,
      (extract(epoch from (expires_at - now())) * 1000)::float8 as left_ms
    from modem_logins where imei = ${imei} and (expires_at is null or expires_at > now())
    order by username`;
  const [access] = await sql<AccessRow[]>`
    select to_jsonb(allowlist::text[]) as allowlist, download_kbps, upload_kbps, updated_at
    from modem_access where imei = ${imei}`;
  return {
    logins: rows.map((r) => ({
      username: r.username,
      password: r.password,
      ports: r.ports,
      expiresAtMs: r.left_ms === null ? null : localNow + Math.max(0, Math.round(r.left_ms)),
    })),
    allowlist: access?.allowlist ?? [],
    limits: {
      downloadKbps: access?.download_kbps ?? null,
      uploadKbps: access?.upload_kbps ?? null,
    },
  };
}
