import { randomBytes } from 'node:crypto';
import type { Sql, TransactionSql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { IMEI_PATTERN } from './types.js';

/** A modem's proxy login on the host that serves it. */
export interface ProxyCredentials {
  imei: string;
  host: string;
  username: string;
  password: string;
  /** When the password last changed; null: never since it was allocated. */
  rotatedAt: Date | null;
}

interface CredentialsRow {
  host_id: string;
  proxy_user: string;
  proxy_password: string;
  credentials_rotated_at: Date | null;
}

const newPassword = (): string => randomBytes(18).toString('base64url');

/** `unknown_modem` (404) or `no_credentials` (409: the modem has no ports on its host yet). */
async function modemAllocation(
  sql: Sql | TransactionSql,
  imei: string,
  lock: boolean,
): Promise<CredentialsRow> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  const modem = lock
    ? await sql`select host_id from modems where imei = ${imei} for update`
    : await sql`select host_id from modems where imei = ${imei}`;
  if (modem.length === 0) throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
  const [row] = await sql<CredentialsRow[]>`
    select a.host_id, a.proxy_user, a.proxy_password, a.credentials_rotated_at
    from modems m join allocations a on a.imei = m.imei and a.host_id = m.host_id
    where m.imei = ${imei}`;
  if (!row)
    throw new ModemfleetError(
      'no_credentials',
      `modem ${imei} has no proxy ports yet (it was never identified on a host)`,
    );
  return row;
}

export async function getCredentials(sql: Sql, imei: string): Promise<ProxyCredentials> {
  const row = await modemAllocation(sql, imei, false);
  return {
    imei,
    host: row.host_id,
    username: row.proxy_user,
    password: row.proxy_password,
    rotatedAt: row.credentials_rotated_at,
  };
}

/**
 * A new proxy password for the modem (its username stays), stored on every host's allocation of it,
 * and a `credentials` command in the same transaction: the host that serves the modem restarts its
 * proxy with the new password (the old one is refused from then on), without taking the
 * modem offline. Nothing changes for an unknown modem or one without ports.
 */
export async function rotateCredentials(
  sql: Sql,
  imei: string,
  requestedBy: string,
): Promise<ProxyCredentials & { commandId: number }> {
  const password = newPassword();
  return sql.begin(async (tx) => {
    const row = await modemAllocation(tx, imei, true);
    const [updated] = await tx<{ credentials_rotated_at: Date }[]>`
      update allocations set proxy_password = ${password}, credentials_rotated_at = now()
      where imei = ${imei} returning credentials_rotated_at`;
    const [command] = await tx<{ id: string }[]>`
      insert into modem_commands (imei, kind, requested_by)
      values (${imei}, 'credentials', ${requestedBy.slice(0, 128) || 'unknown'}) returning id`;
    if (!updated || !command) throw new Error('credentials rotation wrote nothing');
    return {
      imei,
      host: row.host_id,
      username: row.proxy_user,
      password,
      rotatedAt: updated.credentials_rotated_at,
      commandId: Number(command.id),
    };
  });
}
