import type { Sql } from 'postgres';
import { ModemfleetError } from '../util/errors.js';
import { errorCode, SQLSTATE } from './pgErrors.js';
import { json } from './sqlJson.js';
import {
  COMMAND_KINDS,
  IMEI_PATTERN,
  isCommandKind,
  type Command,
  type CommandKind,
  type CommandStatus,
} from './types.js';

interface CommandRow {
  id: number;
  imei: string;
  kind: CommandKind;
  requested_by: string;
  requested_at: Date;
  status: CommandStatus;
}

const toCommand = (r: CommandRow): Command => ({
  id: r.id,
  imei: r.imei,
  kind: r.kind,
  requestedBy: r.requested_by,
  requestedAt: r.requested_at,
  status: r.status,
});

/** Queue an operator command. Clear errors for an unknown kind or IMEI; nothing is written then. */
export async function insertCommand(
  sql: Sql,
  imei: string,
  kind: string,
  requestedBy: string,
): Promise<number> {
  if (!isCommandKind(kind)) {
    throw new ModemfleetError(
      'invalid_command',
      `unknown command kind '${kind.slice(0, 32)}'; expected one of ${COMMAND_KINDS.join(', ')}`,
    );
  }
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  if (!requestedBy || requestedBy.length > 128)
    throw new ModemfleetError('invalid_command', 'requested_by must be 1-128 characters');
  try {
    const [row] = await sql<{ id: number }[]>`
      insert into modem_commands (imei, kind, requested_by) values (${imei}, ${kind}, ${requestedBy}) returning id`;
    if (!row) throw new Error('insert returned nothing');
    return row.id;
  } catch (err) {
    if (errorCode(err) === SQLSTATE.foreignKeyViolation) {
      throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`, { cause: err });
    }
    throw err;
  }
}

/**
 * Claim pending commands of the modems of this host: `FOR UPDATE SKIP LOCKED`, at most one running
 * command per modem and in id order per modem (a later command waits until the earlier one is
 * finished). Commands for modems of another host are left to that host.
 */
export async function claimCommands(sql: Sql, hostId: string, limit = 100): Promise<Command[]> {
  const rows = await sql<CommandRow[]>`
    update modem_commands c set status = 'running', claimed_by = ${hostId}, claimed_at = now()
    where c.id in (
      select p.id from modem_commands p join modems m on m.imei = p.imei
      where p.status = 'pending' and m.host_id = ${hostId}
        and not exists (
          select 1 from modem_commands r
          where r.imei = p.imei and (r.status = 'running' or (r.status = 'pending' and r.id < p.id)))
      order by p.id
      limit ${limit}
      for update of p skip locked)
    and c.status = 'pending'
    returning c.id, c.imei, c.kind, c.requested_by, c.requested_at, c.status`;
  return rows.map(toCommand).sort((a, b) => a.id - b.id);
}

/** Commands this host has claimed and not finished (to adopt the ones a lost reply left behind). */
export async function runningCommands(sql: Sql, hostId: string): Promise<Command[]> {
  const rows = await sql<CommandRow[]>`
    select id, imei, kind, requested_by, requested_at, status from modem_commands
    where status = 'running' and claimed_by = ${hostId} order by id`;
  return rows.map(toCommand);
}

/** Is this command still running in this host's name (a fresh read, not a listing's)? */
export async function stillRunning(sql: Sql, hostId: string, id: number): Promise<boolean> {
  const rows = await sql`
    select 1 from modem_commands where id = ${id} and status = 'running' and claimed_by = ${hostId}`;
  return rows.length === 1;
}

/** Record a command's result. Returns false when it was not running (already finished: a no-op). */
export async function finishCommand(
  sql: Sql,
  id: number,
  ok: boolean,
  result: Record<string, unknown> = {},
): Promise<boolean> {
  const rows = await sql`
    update modem_commands set status = ${ok ? 'done' : 'failed'}, result = ${json(sql, result)}::jsonb, finished_at = now()
    where id = ${id} and status = 'running' returning id`;
  return rows.length === 1;
}

/**
 * Commands of this host's modems left `running` in the name of a host that is not running (stopped,
 * silent for `staleSeconds`, unknown, or nobody: an insert by hand) would block their modem's queue
 * forever (one running command per modem): they are failed as `abandoned`.
 */
export async function failAbandonedCommands(sql: Sql, hostId: string, staleSeconds = 60): Promise<number[]> {
  const rows = await sql<{ id: string }[]>`
    update modem_commands c set status = 'failed', finished_at = now(),
      result = jsonb_build_object('error', 'abandoned', 'message',
        'left running by ' || coalesce(c.claimed_by, 'nobody') || ', which is not running')
    from modems m
    where m.imei = c.imei and m.host_id = ${hostId} and c.status = 'running'
      and c.claimed_by is distinct from ${hostId}
      and not exists (
        select 1 from hosts h where h.id = c.claimed_by and h.stopped_at is null
          and h.heartbeat_at > now() - make_interval(secs => ${staleSeconds}))
    returning c.id`;
  return rows.map((r) => Number(r.id));
}

/** After a crash: commands this host had claimed but not finished are failed, with that reason. */
export async function failInterruptedCommands(sql: Sql, hostId: string): Promise<number[]> {
  const rows = await sql<{ id: number }[]>`
    update modem_commands set status = 'failed', finished_at = now(),
      result = jsonb_build_object('error', 'interrupted', 'message', 'the supervisor stopped while the command was running')
    where claimed_by = ${hostId} and status = 'running' returning id`;
  return rows.map((r) => r.id);
}

export async function getCommand(sql: Sql, id: number): Promise<(Command & { result: unknown }) | undefined> {
  const [row] = await sql<(CommandRow & { result: unknown })[]>`
    select id, imei, kind, requested_by, requested_at, status, result from modem_commands where id = ${id}`;
  return row ? { ...toCommand(row), result: row.result } : undefined;
}
