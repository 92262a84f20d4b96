import { parseDuration } from '../fleet/rotationSchedule.js';
import { IMEI_PATTERN } from '../ids.js';
import { UsageError } from './exitCodes.js';

export const SILENCE_USAGE = 'silence IMEI --until DURATION|ISO-TIME | silence IMEI --off [--config FILE]';

/** What `modemfleet silence` was asked: silence until a time, or end the silence (`until` null). */
export interface SilenceRequest {
  imei: string;
  until: Date | null;
}

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * `silence IMEI --until 2h` (a duration from now: 90s, 30m, 2h) or `--until 2026-12-01T06:00Z` (an
 * ISO time with its zone), or `silence IMEI --off`. The range (future, at most 30 days) is checked
 * by the store, like the API's.
 */
export function parseSilenceArgs(
  positionals: readonly string[],
  values: Record<string, unknown>,
  now: number = Date.now(),
): SilenceRequest {
  const [imei = ''] = positionals;
  if (!IMEI_PATTERN.test(imei)) throw new UsageError('imei must be 15 digits');
  const until = values['until'];
  const off = values['off'] === true;
  if (off) {
    if (until !== undefined)
      throw new UsageError(`--until or --off, not both; usage: modemfleet ${SILENCE_USAGE}`);
    return { imei, until: null };
  }
  if (typeof until !== 'string') throw new UsageError(`--until or --off; usage: modemfleet ${SILENCE_USAGE}`);
  const seconds = parseDuration(until);
  if (seconds !== undefined && seconds > 0) return { imei, until: new Date(now + seconds * 1000) };
  const at = ISO.test(until) ? Date.parse(until) : NaN;
  if (Number.isNaN(at))
    throw new UsageError(
      `--until must be a duration like 30m or 2h, or an ISO time like 2026-12-01T06:00Z, not '${until.slice(0, 40)}'`,
    );
  return { imei, until: new Date(at) };
}
