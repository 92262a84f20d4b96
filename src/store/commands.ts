import type { Sql, TransactionSql } from 'postgres';
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

/** Pending commands per modem when the caller does not say (policy `commandQueueMax`). */
export const DEFAULT_COMMAND_QUEUE_MAX = 8;

/**
 * Queue an operator command. Clear errors for an unknown kind or IMEI; nothing is written then. A
 * rotate while one of the modem's rotates is pending is not queued twice: the pending one's id is
 * returned (the partial unique index `modem_commands_one_pending_rotate` holds that in the database,
 * whoever inserts). A modem with `maxPending` commands pending takes no more: `queue_full` (the
 * modem's advisory lock makes the count and the insert one step). A modem whose host is marked
 * dead takes none: `host_unavailable` (one slipping in while the mark is written is failed by the
 * next sweep, src/store/liveness.ts).
 */
export async function insertCommand(
  sql: Sql,
  imei: string,
  kind: string,
  requestedBy: string,
  maxPending = DEFAULT_COMMAND_QUEUE_MAX,
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
    return await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${QUEUE_LOCK}, hashtext(${imei}))`;
      // its host is marked dead (src/store/liveness.ts): the command would only wait for it
      const [dead] = await tx<{ id: string; heartbeat_at: Date }[]>`
        select h.id, h.heartbeat_at from modems m join hosts h on h.id = m.host_id
        where m.imei = ${imei} and h.stale_at is not null`;
      if (dead)
        throw new ModemfleetError(
          'host_unavailable',
          `modem ${imei} is on host ${dead.id}, which is not running (last heartbeat ${dead.heartbeat_at.toISOString()}); retry when it is back`,
        );
      if (kind === 'rotate') {
        const pending = await pendingRotate(tx, imei);
        if (pending !== undefined) return pending;
      }
      const [queued] = await tx<{ n: number }[]>`
        select count(*)::int as n from modem_commands where imei = ${imei} and status = 'pending'`;
      if ((queued?.n ?? 0) >= maxPending)
        throw new ModemfleetError(
          'queue_full',
          `modem ${imei} already has ${queued?.n ?? 0} pending commands (limit ${maxPending}); retry when they have run`,
        );
      if (kind !== 'rotate') return insertRow(tx, imei, kind, requestedBy);
      // a rotate inserted meanwhile without the lock (raw SQL) wins the index: its id is returned;
      // if it was claimed between the conflict and the read, the insert is tried again
      for (let attempt = 0; ; attempt++) {
        const [row] = await tx<{ id: number }[]>`
          insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', ${requestedBy})
          on conflict (imei) where kind = 'rotate' and status = 'pending' do nothing
          returning id`;
        if (row) return Number(row.id);
        const pending = await pendingRotate(tx, imei);
        if (pending !== undefined) return pending;
        if (attempt >= 3) throw new Error('the pending rotate kept changing; retry');
      }
    });
  } catch (err) {
    if (errorCode(err) === SQLSTATE.foreignKeyViolation) {
      throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`, { cause: err });
    }
    throw err;
  }
}

async function pendingRotate(tx: TransactionSql, imei: string): Promise<number | undefined> {
  const [pending] = await tx<{ id: number }[]>`
    select id from modem_commands where imei = ${imei} and kind = 'rotate' and status = 'pending'
    order by id limit 1`;
  return pending ? Number(pending.id) : undefined;
}

/** Key space of the per-modem advisory lock that makes "one pending rotate" and the cap one step. */
const QUEUE_LOCK = 0x6d66_726f; // 'mfro'

async function insertRow(
  sql: Sql | TransactionSql,
  imei: string,
  kind: string,
  requestedBy: string,
): Promise<number> {
  const [row] = await sql<{ id: number }[]>`
    insert into modem_commands (imei, kind, requested_by) values (${imei}, ${kind}, ${requestedBy}) returning id`;
  if (!row) throw new Error('insert returned nothing');
  return Number(row.id);
}

/**
 * A rotate claimed (carried out) for the modem and finished less than `rotationMinIntervalMs` ago:
 * the pending rotate waits. Skipped scheduled rotations were never claimed and do not count.
 */
const recentRotation = (sql: Sql, rotationMinIntervalMs: number) => sql`
  exists (select 1 from modem_commands f
          where f.imei = p.imei and f.kind = 'rotate' and f.finished_at is not null
            and f.claimed_at is not null
            and f.finished_at > now() - make_interval(secs => ${rotationMinIntervalMs / 1000}))`;

/**
 * States a modem leaves by itself, towards online (an operator's reset or enable, recovery): a
 * rotate queued behind them waits rather than fail `not_online` at once. In other states
 * (online, disabled, error, removed), or with no journal yet (the row's default state), it is
 * claimed, and the modem answers.
 */
export const ROTATE_WAITS_IN = ['detecting', 'initializing', 'enabling', 'resetting', 'recovering'];

/** How often a rotate waiting for its modem to come back is looked at again. */
export const ROTATE_RECHECK_MS = 1_000;

/**
 * Claim pending commands of the modems of this host: `FOR UPDATE SKIP LOCKED`, at most one running
 * command per modem. Operator commands (reset, disable, enable) go first, in id order; the modem's
 * one pending rotate runs when none of them is pending. Commands for modems of another host are
 * left to that host. A rotate is not claimed before `rotationMinIntervalMs` since the modem's last
 * rotation finished; it waits, and holds nothing else back meanwhile (a `disable` queued behind it
 * runs at once); nor while its modem is on its way back online (`ROTATE_WAITS_IN`). So a rotation
 * link used in a loop delays an operator's command by one rotation at most: the one running.
 */
export async function claimCommands(
  sql: Sql,
  hostId: string,
  limit = 100,
  rotationMinIntervalMs = 0,
): Promise<Command[]> {
  const rows = await sql<CommandRow[]>`
    update modem_commands c set status = 'running', claimed_by = ${hostId}, claimed_at = now()
    where c.id in (
      select p.id from modem_commands p join modems m on m.imei = p.imei
      where p.status = 'pending' and m.host_id = ${hostId}
        and not exists (
          select 1 from modem_commands r
          where r.imei = p.imei
            and (r.status = 'running'
                 or (r.status = 'pending' and r.id <> p.id
                     and ((r.kind <> 'rotate' and (p.kind = 'rotate' or r.id < p.id))
                          or (r.kind = 'rotate' and p.kind = 'rotate' and r.id < p.id)))))
        and not (p.kind = 'rotate' and m.seq > 0 and m.state in ${sql(ROTATE_WAITS_IN)})
        and not (p.kind = 'rotate' and ${rotationMinIntervalMs > 0 ? recentRotation(sql, rotationMinIntervalMs) : sql`false`})
      order by p.id
      limit ${limit}
      for update of p skip locked)
    and c.status = 'pending'
    returning c.id, c.imei, c.kind, c.requested_by, c.requested_at, c.status`;
  return rows.map(toCommand).sort((a, b) => a.id - b.id);
}

/**
 * Milliseconds until the first of this host's pending rotates held back by the minimum interval may
 * be claimed, or `ROTATE_RECHECK_MS` when one waits for its modem to come back (the command
 * processor wakes then); undefined when none waits.
 */
export async function rotationWaitMs(
  sql: Sql,
  hostId: string,
  rotationMinIntervalMs: number,
): Promise<number | undefined> {
  const [busy] = await sql<{ n: number }[]>`
    select count(*)::int as n from modem_commands p join modems m on m.imei = p.imei
    where p.status = 'pending' and p.kind = 'rotate' and m.host_id = ${hostId}
      and m.seq > 0 and m.state in ${sql(ROTATE_WAITS_IN)}`;
  const recheck = (busy?.n ?? 0) > 0 ? ROTATE_RECHECK_MS : undefined;
  if (rotationMinIntervalMs <= 0) return recheck;
  const [row] = await sql<{ wait_ms: number | null }[]>`
    select ceil(extract(epoch from min(w.allowed_at) - now()) * 1000)::float8 as wait_ms
    from (
      select (select max(f.finished_at) from modem_commands f
               where f.imei = p.imei and f.kind = 'rotate' and f.finished_at is not null
                 and f.claimed_at is not null)
             + make_interval(secs => ${rotationMinIntervalMs / 1000}) as allowed_at
      from modem_commands p join modems m on m.imei = p.imei
      where p.status = 'pending' and p.kind = 'rotate' and m.host_id = ${hostId}) w
    where w.allowed_at > now()`;
  const wait = row?.wait_ms;
  if (wait === null || wait === undefined) return recheck;
  return Math.min(Math.max(1, wait), recheck ?? Infinity);
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
