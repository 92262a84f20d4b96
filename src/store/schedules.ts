import type { Sql } from 'postgres';
import {
  isOff,
  settingProblems,
  type ScheduleFacts,
  type ScheduleSetting,
} from '../fleet/rotationSchedule.js';
import { ModemfleetError } from '../util/errors.js';
import { errorCode, SQLSTATE } from './pgErrors.js';
import { json } from './sqlJson.js';
import { IMEI_PATTERN } from './types.js';

/**
 * A modem's own rotation schedule as stored (`rotation_schedules`): an interval with jitter, or off
 * (`off: true`, `intervalSeconds` null: no scheduled rotation even under a farm default).
 */
export interface StoredSchedule {
  off: boolean;
  intervalSeconds: number | null;
  jitterSeconds: number;
  updatedAt: Date;
  updatedBy: string;
}

interface ScheduleRow {
  interval_seconds: number | null;
  jitter_seconds: number;
  updated_at: Date;
  updated_by: string;
}

const toSchedule = (r: ScheduleRow): StoredSchedule => ({
  off: r.interval_seconds === null,
  intervalSeconds: r.interval_seconds,
  jitterSeconds: r.jitter_seconds,
  updatedAt: r.updated_at,
  updatedBy: r.updated_by,
});

/**
 * Store (or replace) a modem's rotation schedule (or `{ off: true }`). Bad input is refused with `invalid_schedule`
 * (every problem in the message) and an unknown IMEI with `unknown_modem`; nothing is written then.
 */
export async function setSchedule(
  sql: Sql,
  imei: string,
  schedule: unknown,
  updatedBy: string,
  floorSeconds: number,
): Promise<StoredSchedule> {
  if (!IMEI_PATTERN.test(imei)) throw new ModemfleetError('invalid_imei', 'imei must be 15 digits');
  const problems = settingProblems(schedule, floorSeconds);
  if (problems.length) throw new ModemfleetError('invalid_schedule', problems.join('; '));
  const setting = schedule as ScheduleSetting;
  const intervalSeconds = isOff(setting) ? null : setting.intervalSeconds;
  const jitterSeconds = isOff(setting) ? 0 : (setting.jitterSeconds ?? 0);
  try {
    const [row] = await sql<ScheduleRow[]>`
      insert into rotation_schedules (imei, interval_seconds, jitter_seconds, updated_by)
      values (${imei}, ${intervalSeconds}, ${jitterSeconds}, ${updatedBy.slice(0, 128) || 'unknown'})
      on conflict (imei) do update set interval_seconds = excluded.interval_seconds,
        jitter_seconds = excluded.jitter_seconds, updated_by = excluded.updated_by, updated_at = now()
      returning interval_seconds, jitter_seconds, updated_at, updated_by`;
    if (!row) throw new Error('upsert returned nothing');
    return toSchedule(row);
  } catch (err) {
    if (errorCode(err) === SQLSTATE.foreignKeyViolation)
      throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`, { cause: err });
    throw err;
  }
}

/** Remove a modem's own schedule (the farm default applies again); false when it had none. */
export async function deleteSchedule(sql: Sql, imei: string): Promise<boolean> {
  const rows = await sql`delete from rotation_schedules where imei = ${imei} returning imei`;
  return rows.length > 0;
}

export async function getSchedule(sql: Sql, imei: string): Promise<StoredSchedule | null> {
  const [row] = await sql<ScheduleRow[]>`
    select interval_seconds, jitter_seconds, updated_at, updated_by from rotation_schedules where imei = ${imei}`;
  return row ? toSchedule(row) : null;
}

/**
 * What the scheduler needs of this host's modems, with the database's clock: the modems with their
 * own schedule, or every modem of the host when a farm default applies.
 */
export async function scheduleFacts(
  sql: Sql,
  hostId: string,
  everyModem: boolean,
): Promise<{ nowMs: number; facts: ScheduleFacts[] }> {
  const rows = await sql<
    {
      imei: string;
      state: string;
      interval_seconds: number | null;
      jitter_seconds: number | null;
      updated_at: Date | null;
      last_rotation_at: Date | null;
      busy: boolean;
      now: Date;
    }[]
  >`
    select m.imei, m.state, s.interval_seconds, s.jitter_seconds, s.updated_at, now() as now,
      (select c.finished_at from modem_commands c
        where c.imei = m.imei and c.kind = 'rotate' and c.finished_at is not null
        order by c.finished_at desc limit 1) as last_rotation_at,
      exists (select 1 from modem_commands c
        where c.imei = m.imei and c.kind = 'rotate' and c.status in ('pending', 'running')) as busy
    from modems m left join rotation_schedules s on s.imei = m.imei
    where m.host_id = ${hostId} and (s.interval_seconds is not null or ${everyModem})
    order by m.imei`;
  const nowMs = rows[0]?.now.getTime() ?? Date.now();
  return {
    nowMs,
    facts: rows.map((r) => ({
      imei: r.imei,
      state: r.state,
      own: !r.updated_at
        ? null
        : r.interval_seconds === null
          ? 'off'
          : {
              intervalSeconds: r.interval_seconds,
              jitterSeconds: r.jitter_seconds ?? 0,
              sinceMs: r.updated_at.getTime(),
            },
      lastRotationMs: r.last_rotation_at?.getTime() ?? null,
      busy: r.busy,
    })),
  };
}

/**
 * A scheduled rotation of a modem that is not online is skipped and recorded: a rotate command row
 * requested by `schedule`, finished at once as failed with error `not_online` (never claimed, so it
 * is no rotation for the minimum interval; it is the schedule's next basis).
 */
export async function recordSkippedRotation(sql: Sql, imei: string, state: string): Promise<number> {
  const result = {
    error: 'not_online',
    message: `scheduled rotation skipped: the modem is ${state.slice(0, 32)}, not online`,
  };
  const [row] = await sql<{ id: string }[]>`
    insert into modem_commands (imei, kind, requested_by, status, result, finished_at)
    values (${imei}, 'rotate', 'schedule', 'failed', ${json(sql, result)}::jsonb, now()) returning id`;
  return Number(row?.id);
}
