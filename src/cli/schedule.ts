import { parseDuration, type ScheduleSetting } from '../fleet/rotationSchedule.js';
import { IMEI_PATTERN } from '../ids.js';
import { UsageError } from './exitCodes.js';

export const SCHEDULE_USAGE =
  'schedule IMEI INTERVAL [--jitter DURATION] | schedule IMEI --off | schedule IMEI --default [--config FILE]';

/**
 * What `modemfleet schedule` was asked: a setting to store (an interval, or off), or `null` to remove
 * the modem's own (the farm default applies again).
 */
export interface ScheduleRequest {
  imei: string;
  schedule: ScheduleSetting | null;
}

function duration(text: string, name: string): number {
  const seconds = parseDuration(text);
  if (seconds === undefined)
    throw new UsageError(`${name} must be a duration like 90s, 10m or 1h, not '${text.slice(0, 20)}'`);
  return seconds;
}

/**
 * `schedule IMEI 10m [--jitter 1m]`, `schedule IMEI --off` (no scheduled rotation, even under the
 * farm default `rotation.schedule`) or `schedule IMEI --default` (the farm default, if any). Durations are whole seconds, minutes
 * or hours (`90s`, `10m`, `1h`; a bare number is seconds). The ranges (the policy's floor, jitter
 * below the interval) are checked by the store, like the API's.
 */
export function parseScheduleArgs(
  positionals: readonly string[],
  values: Record<string, unknown>,
): ScheduleRequest {
  const [imei = '', interval] = positionals;
  if (!IMEI_PATTERN.test(imei)) throw new UsageError('imei must be 15 digits');
  const jitter = values['jitter'];
  const off = values['off'] === true;
  const farmDefault = values['default'] === true;
  if (off || farmDefault) {
    const flag = off ? '--off' : '--default';
    if (off && farmDefault)
      throw new UsageError(`--off or --default, not both; usage: modemfleet ${SCHEDULE_USAGE}`);
    if (interval !== undefined || jitter !== undefined)
      throw new UsageError(`${flag} takes no interval or jitter; usage: modemfleet ${SCHEDULE_USAGE}`);
    return { imei, schedule: off ? { off: true } : null };
  }
  if (interval === undefined)
    throw new UsageError(`an interval, --off or --default; usage: modemfleet ${SCHEDULE_USAGE}`);
  return {
    imei,
    schedule: {
      intervalSeconds: duration(interval, 'INTERVAL'),
      jitterSeconds: typeof jitter === 'string' ? duration(jitter, '--jitter') : 0,
    },
  };
}
