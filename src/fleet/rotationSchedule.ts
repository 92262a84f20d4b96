/**
 * Rotation schedules, the pure part: validation, durations, and when each modem is due. The
 * scheduler (`rotationScheduler.ts`) reads the stored facts and carries out what `planTick` decides;
 * the property test drives `planTick` with a fake clock.
 */

export interface RotationSchedule {
  intervalSeconds: number;
  jitterSeconds: number;
}

/**
 * "No reuse within H hours": after a rotation, a public address seen within `hours` on this modem
 * (`modem`) or on any modem of the farm (`farm`) does not count as new.
 */
export interface NoReuse {
  hours: number;
  scope: 'modem' | 'farm';
}

/** What a modem's own schedule can be: an interval, or off (no scheduled rotation, whatever the farm default). */
export type ScheduleSetting = RotationSchedule | { off: true };

export const isOff = (s: ScheduleSetting): s is { off: true } => 'off' in s;

/** The longest schedule interval (30 days; the table's check). */
export const MAX_SCHEDULE_SECONDS = 30 * 86_400;

/**
 * Problems of a modem's own setting (`{ "off": true }`, or a schedule as below) as `field: message`.
 */
export function settingProblems(value: unknown, floorSeconds: number): string[] {
  if (typeof value === 'object' && value !== null && 'off' in value) {
    const keys = Object.keys(value);
    if (value.off !== true || keys.length !== 1)
      return ['off: must be { "off": true } alone (DELETE the schedule to follow the farm default)'];
    return [];
  }
  return scheduleProblems(value, floorSeconds);
}

/**
 * Problems of a schedule as `field: message` (empty when valid): a whole `intervalSeconds` from
 * `floorSeconds` to 30 days, a whole `jitterSeconds` from 0 to below the interval.
 */
export function scheduleProblems(value: unknown, floorSeconds: number, path = ''): string[] {
  const at = (key: string): string => (path ? `${path}.${key}` : key);
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    return [`${path || 'schedule'}: must be { "intervalSeconds": number, "jitterSeconds": number }`];
  const problems: string[] = [];
  for (const key of Object.keys(value))
    if (key !== 'intervalSeconds' && key !== 'jitterSeconds')
      problems.push(`${at(key.slice(0, 32))}: unknown setting`);
  const { intervalSeconds, jitterSeconds = 0 } = value as Record<string, unknown>;
  const whole = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
  if (!whole(intervalSeconds) || intervalSeconds < floorSeconds || intervalSeconds > MAX_SCHEDULE_SECONDS)
    problems.push(
      `${at('intervalSeconds')}: must be a whole number of seconds from ${floorSeconds} to ${MAX_SCHEDULE_SECONDS}`,
    );
  if (!whole(jitterSeconds) || jitterSeconds < 0)
    problems.push(`${at('jitterSeconds')}: must be a whole number of seconds, 0 or more`);
  else if (whole(intervalSeconds) && jitterSeconds >= intervalSeconds)
    problems.push(`${at('jitterSeconds')}: must be less than intervalSeconds (${intervalSeconds})`);
  return problems;
}

const UNITS: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3_600 };

/** `90s`, `10m`, `1h` (or plain seconds, `600`) → seconds; undefined for anything else. */
export function parseDuration(text: string): number | undefined {
  const match = /^(\d{1,7})(s|m|h)?$/.exec(text.trim());
  if (!match) return undefined;
  const seconds = Number(match[1]) * (UNITS[match[2] ?? 's'] ?? 1);
  return Number.isSafeInteger(seconds) ? seconds : undefined;
}

/** Due time (ms): the basis + interval ± uniform jitter; `random` in [0, 1). */
export function nextDue(basisMs: number, schedule: RotationSchedule, random: () => number): number {
  const jitterMs = schedule.jitterSeconds * 1000 * (2 * random() - 1);
  return basisMs + schedule.intervalSeconds * 1000 + Math.round(jitterMs);
}

/** What the scheduler knows of one modem of this host, read fresh at every tick. */
export interface ScheduleFacts {
  imei: string;
  /** `modems.state`: only `online` modems are rotated. */
  state: string;
  /**
   * The modem's own schedule and since when (ms); `off`: never rotated on a schedule; null: the farm
   * default applies.
   */
  own: (RotationSchedule & { sinceMs: number }) | 'off' | null;
  /** When the modem's last rotate finished (done, failed or skipped), ms; null: never. */
  lastRotationMs: number | null;
  /** A rotate of the modem is pending or running: nothing is due until it finished. */
  busy: boolean;
}

/** Per modem: the due time drawn for one basis and schedule (redrawn when either changes). */
export type ScheduleMemory = Map<string, { key: string; dueMs: number }>;

export interface Plan {
  /** Online modems whose rotation is due: queue a rotate. */
  rotate: string[];
  /** Due but not online: recorded as skipped (no rotation). */
  skip: { imei: string; state: string }[];
  /** The earliest due time still ahead (ms), if any. */
  nextDueMs: number | undefined;
}

/**
 * One tick of the scheduler at `nowMs`: which modems are due. A modem's basis is its last rotation,
 * or the start of its schedule (its own schedule's `sinceMs`; for the farm default, `startedMs`,
 * when this scheduler started) when that is later or there was none; the due time is the basis +
 * interval ± jitter, drawn once per basis. A modem with a rotate pending or running is never due, so
 * the scheduler never queues a second one; a restart draws again from the same stored basis, so the
 * schedule continues (at most one overdue rotation, never a burst).
 */
export function planTick(
  memory: ScheduleMemory,
  facts: readonly ScheduleFacts[],
  nowMs: number,
  options: { farmDefault: RotationSchedule | undefined; startedMs: number; random: () => number },
): Plan {
  const plan: Plan = { rotate: [], skip: [], nextDueMs: undefined };
  const seen = new Set<string>();
  for (const f of facts) {
    if (f.own === 'off') continue;
    const schedule = f.own ?? options.farmDefault;
    if (!schedule) continue;
    seen.add(f.imei); // a busy modem keeps its entry: its basis changes when the rotate finishes
    if (f.busy) continue;
    const start = f.own ? f.own.sinceMs : options.startedMs;
    const basis = f.own ? Math.max(f.lastRotationMs ?? start, start) : (f.lastRotationMs ?? start);
    const key = `${basis}/${schedule.intervalSeconds}/${schedule.jitterSeconds}`;
    let entry = memory.get(f.imei);
    if (entry?.key !== key) {
      entry = { key, dueMs: nextDue(basis, schedule, options.random) };
      memory.set(f.imei, entry);
    }
    if (entry.dueMs > nowMs) {
      plan.nextDueMs = Math.min(plan.nextDueMs ?? Infinity, entry.dueMs);
      continue;
    }
    if (f.state === 'online') plan.rotate.push(f.imei);
    else plan.skip.push({ imei: f.imei, state: f.state });
  }
  for (const imei of memory.keys()) if (!seen.has(imei)) memory.delete(imei);
  return plan;
}
