import { ConfigError } from '../util/errors.js';
import { NO_FAULTS, type Duration, type SimFaults, type SimProfile, type SimTimings } from './ec25Model.js';

/** Luhn check digit, as IMEIs carry. */
export function luhnDigit(digits: string): number {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = Number(digits[digits.length - 1 - i]);
    if (i % 2 === 0) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return (10 - (sum % 10)) % 10;
}

/** A deterministic PRNG (mulberry32) so a seed gives the same farm every time. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

const OPERATORS = [
  { operator: 'Vodafone', mcc: 262, mnc: 2 },
  { operator: 'Telekom.de', mcc: 262, mnc: 1 },
  { operator: 'o2 - de', mcc: 262, mnc: 3 },
];

export type TimingName = 'fast' | 'realistic';
export const TIMING_NAMES: readonly TimingName[] = ['fast', 'realistic'];

/**
 * `fast`: milliseconds, for tests. `realistic`: what the field shows (docs/ec25.md §10, estimates
 * there): RDY 10-20 s after a reset (tty gone 4-8 s, then 6-12 s to RDY), attach 2-15 s,
 * `AT+CFUN=0` up to ~5 s, a data call 1-3 s; each event draws anew within its range.
 */
export function timingProfile(name: TimingName): SimTimings {
  if (name === 'realistic')
    return {
      bootMs: [6_000, 12_000],
      latencyMs: [5, 40],
      attachMs: [2_000, 15_000],
      resetMs: [4_000, 8_000],
      callMs: [1_000, 3_000],
      cfunMs: [200, 5_000],
    };
  return { bootMs: 300, latencyMs: 5, attachMs: 400, resetMs: 500, callMs: 20, cfunMs: 10 };
}

/** n valid, distinct profiles: IMEIs with Luhn digit (TAC of an EC25), ICCIDs 89..., IMSIs. */
export function defaultProfiles(n: number, seed = 1, options: { timing?: TimingName } = {}): SimProfile[] {
  const rand = seededRandom(seed);
  return Array.from({ length: n }, (_, i) => {
    const serial = String(100000 + ((seed * 7919 + i) % 900000)).padStart(6, '0');
    const body = `866834${'04'}${serial}`.slice(0, 14);
    const op = OPERATORS[i % OPERATORS.length] ?? OPERATORS[0]!;
    const iccidBody =
      `8949${String(op.mnc).padStart(2, '0')}${String(seed).padStart(3, '0').slice(-3)}${String(i).padStart(9, '0')}`.slice(
        0,
        18,
      );
    return {
      imei: `${body}${luhnDigit(body)}`,
      iccid: `${iccidBody}${luhnDigit(iccidBody)}`,
      imsi: `${op.mcc}${String(op.mnc).padStart(2, '0')}${String(1_000_000_000 + seed * 1000 + i).slice(-10)}`,
      operator: op.operator,
      mcc: op.mcc,
      mnc: op.mnc,
      firmware: 'EC25EFAR06A11M4G',
      rssi: 12 + Math.floor(rand() * 18),
      timings: timingProfile(options.timing ?? 'fast'),
      faults: { ...NO_FAULTS },
      usbnet: 0,
      tac: 0x600 + ((seed + i) % 200),
      cellId: 0x7676a00 + i,
    };
  });
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Profiles from a JSON file's content: an array of partial profiles laid over `defaultProfiles`.
 * Every problem is reported as `path: message`.
 */
export function parseProfiles(value: unknown, seed = 1, options: { timing?: TimingName } = {}): SimProfile[] {
  const problems: string[] = [];
  if (!Array.isArray(value)) throw new ConfigError(['profiles: must be a JSON array of modem profiles']);
  const base = defaultProfiles(value.length, seed, options);
  const out = value.map((item, i) => {
    const p = base[i] as SimProfile;
    const at = `profiles[${i}]`;
    if (!isRecord(item)) {
      problems.push(`${at}: must be an object`);
      return p;
    }
    const str = (key: 'imei' | 'iccid' | 'imsi' | 'operator' | 'firmware', pattern: RegExp): void => {
      const v = item[key];
      if (v === undefined) return;
      if (typeof v !== 'string' || !pattern.test(v)) problems.push(`${at}.${key}: invalid`);
      else p[key] = v;
    };
    str('imei', /^\d{15}$/);
    str('iccid', /^\d{18,20}$/);
    str('imsi', /^\d{6,15}$/);
    str('operator', /^[\x20\x21\x23-\x5b\x5d-\x7e]{1,32}$/); // printable, no quotes or backslashes
    str('firmware', /^[A-Za-z0-9_.-]{1,32}$/);
    if (item['rssi'] !== undefined) {
      const r = item['rssi'];
      if (typeof r !== 'number' || !Number.isInteger(r) || r < 0 || r > 31)
        problems.push(`${at}.rssi: must be an integer 0-31`);
      else p.rssi = r;
    }
    if (item['timings'] !== undefined) {
      if (!isRecord(item['timings'])) problems.push(`${at}.timings: must be an object`);
      else
        for (const [k, v] of Object.entries(item['timings'])) {
          if (!TIMING_KEYS.includes(k as keyof SimTimings))
            problems.push(`${at}.timings.${k}: unknown timing`);
          else {
            const d = duration(v);
            if (d === undefined)
              problems.push(`${at}.timings.${k}: must be 0-600000 ms, or [min, max] within that`);
            else p.timings[k as keyof SimTimings] = d;
          }
        }
    }
    if (item['faults'] !== undefined) {
      if (!isRecord(item['faults'])) problems.push(`${at}.faults: must be an object`);
      else
        for (const [k, v] of Object.entries(item['faults'])) {
          const problem = faultProblem(k, v);
          if (problem) problems.push(`${at}.faults.${k}: ${problem}`);
          else (p.faults as unknown as Record<string, unknown>)[k] = v;
        }
    }
    if (item['usbnet'] !== undefined) {
      const v = item['usbnet'];
      if (v !== 0 && v !== 1 && v !== 2 && v !== 3)
        problems.push(`${at}.usbnet: 0 (QMI/RmNet), 1 (ECM), 2 (MBIM) or 3 (RNDIS)`);
      else p.usbnet = v;
    }
    if (item['dns'] !== undefined) {
      const v = item['dns'];
      if (!Array.isArray(v) || v.length !== 2 || !v.every((a) => typeof a === 'string' && IPV4.test(a)))
        problems.push(`${at}.dns: two IPv4 addresses, e.g. ["10.74.210.210", "10.74.210.211"]`);
      else p.dns = [v[0] as string, v[1] as string];
    }
    for (const key of ['tac', 'cellId'] as const) {
      const v = item[key];
      if (v === undefined) continue;
      const max = key === 'tac' ? 0xffff : 0xfffffff;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max)
        problems.push(`${at}.${key}: an integer 1-${max}`);
      else p[key] = v;
    }
    if (item['subnet'] !== undefined) {
      const v = item['subnet'];
      if (typeof v !== 'string' || !/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){2}$/.test(v))
        problems.push(`${at}.subnet: the first three octets of a /24, e.g. "100.65.3"`);
      else p.subnet = v;
    }
    for (const k of Object.keys(item)) {
      if (
        ![
          'imei',
          'iccid',
          'imsi',
          'operator',
          'firmware',
          'rssi',
          'timings',
          'faults',
          'subnet',
          'usbnet',
          'dns',
          'tac',
          'cellId',
        ].includes(k)
      )
        problems.push(`${at}.${k}: unknown setting`);
    }
    return p;
  });
  const imeis = new Set<string>();
  out.forEach((p, i) => {
    if (imeis.has(p.imei)) problems.push(`profiles[${i}].imei: duplicate ${p.imei}`);
    imeis.add(p.imei);
  });
  if (problems.length > 0) throw new ConfigError(problems);
  return out;
}

const OCTET = '(25[0-5]|2[0-4]\\d|1?\\d?\\d)';
const IPV4 = new RegExp(`^${OCTET}(\\.${OCTET}){3}$`);
const TIMING_KEYS: readonly (keyof SimTimings)[] = [
  'bootMs',
  'latencyMs',
  'attachMs',
  'resetMs',
  'callMs',
  'cfunMs',
];
const MAX_MS = 600_000;

const isMs = (v: unknown): v is number =>
  typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= MAX_MS;

/** A timing from JSON: ms, or `[min, max]`; undefined when invalid. */
function duration(v: unknown): Duration | undefined {
  if (isMs(v)) return v;
  if (Array.isArray(v) && v.length === 2 && isMs(v[0]) && isMs(v[1]) && v[0] <= v[1]) return [v[0], v[1]];
  return undefined;
}

/** What is wrong with one fault value from JSON, or undefined. */
function faultProblem(key: string, v: unknown): string | undefined {
  if (!(key in NO_FAULTS)) return 'unknown fault';
  switch (key as keyof SimFaults) {
    case 'registration':
      return ['ok', 'roaming', 'denied', 'searching'].includes(v as string)
        ? undefined
        : 'ok, roaming, denied or searching';
    case 'cs':
    case 'ps':
      return v === null || (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 11)
        ? undefined
        : 'null (as EPS) or a registration stat 0-11';
    case 'simBusyMs':
    case 'slowMs':
      return isMs(v) ? undefined : 'must be 0-600000 ms';
    case 'garbage':
    case 'sameAddress':
      return typeof v === 'number' && v >= 0 && v <= 1 ? undefined : 'must be a probability 0-1';
    default:
      return typeof v === 'boolean' ? undefined : 'must be a boolean';
  }
}
