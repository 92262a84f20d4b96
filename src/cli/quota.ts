import { isQuotaPeriod, parseBytes, QUOTA_PERIODS, type QuotaPeriod } from '../fleet/trafficMath.js';
import { IMEI_PATTERN } from '../ids.js';
import { parseIsoTime } from '../inspector/trafficApi.js';
import { quotaView, type QuotaView } from '../store/quotas.js';
import type { Store } from '../store/store.js';
import { ModemfleetError } from '../util/errors.js';
import { UsageError } from './exitCodes.js';

export const QUOTA_USAGE =
  'quota IMEI [BYTES --period day|month|total [--month-start DAY]] | quota IMEI --clear|--reset | quota IMEI --expires ISO-TIME | quota IMEI --no-expiry [--config FILE]';

/** What `modemfleet quota` was asked: show, set, clear, reset, set or clear the expiry. */
export type QuotaRequest =
  | { imei: string; action: 'show' }
  | { imei: string; action: 'set'; bytes: number; period: QuotaPeriod; monthStartDay: number }
  | { imei: string; action: 'clear' | 'reset' | 'noExpiry' }
  | { imei: string; action: 'expires'; at: Date };

/**
 * `quota IMEI` shows the quota; `quota IMEI 10GB --period month [--month-start 15]` sets it
 * (decimal or binary units: 500MB, 2GiB, or bytes); `--clear` removes it; `--reset` starts its
 * period now (the port reopens); `--expires 2030-01-31T00:00:00Z` and `--no-expiry` set and remove
 * the expiry. One action at a time. Ranges are checked by the store, like the API's.
 */
export function parseQuotaArgs(
  positionals: readonly string[],
  values: Record<string, unknown>,
): QuotaRequest {
  const [imei = '', size] = positionals;
  if (!IMEI_PATTERN.test(imei)) throw new UsageError('imei must be 15 digits');
  const flags = (['clear', 'reset', 'no-expiry'] as const).filter((f) => values[f] === true);
  const expires = values['expires'];
  const actions = flags.length + (expires !== undefined ? 1 : 0) + (size !== undefined ? 1 : 0);
  if (actions > 1) throw new UsageError(`one action at a time; usage: modemfleet ${QUOTA_USAGE}`);
  if ((values['period'] !== undefined || values['month-start'] !== undefined) && size === undefined)
    throw new UsageError(`--period and --month-start go with BYTES; usage: modemfleet ${QUOTA_USAGE}`);
  if (size !== undefined) {
    const bytes = parseBytes(size);
    if (bytes === undefined)
      throw new UsageError(`BYTES must be a size like 10GB, 500MiB or 1000000, not '${size.slice(0, 20)}'`);
    const period = values['period'];
    if (!isQuotaPeriod(period)) throw new UsageError(`--period must be one of ${QUOTA_PERIODS.join(', ')}`);
    const day = values['month-start'];
    const monthStartDay = day === undefined ? 1 : Number(day);
    if (typeof day === 'string' && !/^\d{1,2}$/.test(day))
      throw new UsageError('--month-start must be a day from 1 to 28');
    return { imei, action: 'set', bytes, period, monthStartDay };
  }
  if (typeof expires === 'string') {
    try {
      return { imei, action: 'expires', at: parseIsoTime(expires, '--expires', 'usage') };
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const [flag] = flags;
  if (flag === 'clear' || flag === 'reset') return { imei, action: flag };
  if (flag === 'no-expiry') return { imei, action: 'noExpiry' };
  return { imei, action: 'show' };
}

/** Carries out a `quota` request; what it answers (the quota as the API shows it, or null). */
export async function quotaCommand(
  store: Store,
  request: QuotaRequest,
  by: string,
): Promise<{ imei: string; quota: QuotaView | null }> {
  const { imei } = request;
  if (!(await store.modemRecord(imei)))
    throw new ModemfleetError('unknown_modem', `no modem with imei ${imei}`);
  switch (request.action) {
    case 'set':
      await store.setQuota(
        imei,
        { bytes: request.bytes, period: request.period, monthStartDay: request.monthStartDay },
        by,
      );
      break;
    case 'clear':
      if (!(await store.clearQuota(imei, by)))
        throw new ModemfleetError('no_quota', `modem ${imei} has no byte quota`);
      break;
    case 'reset':
      await store.resetQuota(imei, by);
      break;
    case 'expires':
      await store.setExpiry(imei, request.at, by);
      break;
    case 'noExpiry':
      if (!(await store.clearExpiry(imei, by)))
        throw new ModemfleetError('no_expiry', `modem ${imei} has no expiry`);
      break;
    case 'show':
      break;
  }
  const q = await store.quota(imei);
  return { imei, quota: q && quotaView(q) };
}
