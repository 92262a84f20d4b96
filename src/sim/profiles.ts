import { ConfigError } from '../util/errors.js';
import { NO_FAULTS, type SimFaults, type SimProfile } from './ec25Model.js';

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

/** n valid, distinct profiles: IMEIs with Luhn digit (TAC of an EC25), ICCIDs 89..., IMSIs. */
export function defaultProfiles(n: number, seed = 1): SimProfile[] {
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
      timings: { bootMs: 300, latencyMs: 5, attachMs: 400, resetMs: 500 },
      faults: { ...NO_FAULTS },
    };
  });
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Profiles from a JSON file's content: an array of partial profiles laid over `defaultProfiles`.
 * Every problem is reported as `path: message`.
 */
export function parseProfiles(value: unknown, seed = 1): SimProfile[] {
  const problems: string[] = [];
  if (!Array.isArray(value)) throw new ConfigError(['profiles: must be a JSON array of modem profiles']);
  const base = defaultProfiles(value.length, seed);
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
          if (!(k in p.timings)) problems.push(`${at}.timings.${k}: unknown timing`);
          else if (typeof v !== 'number' || v < 0 || v > 600_000)
            problems.push(`${at}.timings.${k}: must be 0-600000 ms`);
          else p.timings[k as keyof SimProfile['timings']] = v;
        }
    }
    if (item['faults'] !== undefined) {
      if (!isRecord(item['faults'])) problems.push(`${at}.faults: must be an object`);
      else
        for (const [k, v] of Object.entries(item['faults'])) {
          const key = k as keyof SimFaults;
          if (!(k in NO_FAULTS)) problems.push(`${at}.faults.${k}: unknown fault`);
          else if (typeof NO_FAULTS[key] !== typeof v)
            problems.push(`${at}.faults.${k}: must be a ${typeof NO_FAULTS[key]}`);
          else if (key === 'registration' && !['ok', 'denied', 'searching'].includes(v as string))
            problems.push(`${at}.faults.registration: ok, denied or searching`);
          else (p.faults as unknown as Record<string, unknown>)[key] = v;
        }
    }
    if (item['subnet'] !== undefined) {
      const v = item['subnet'];
      if (typeof v !== 'string' || !/^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){2}$/.test(v))
        problems.push(`${at}.subnet: the first three octets of a /24, e.g. "100.65.3"`);
      else p.subnet = v;
    }
    for (const k of Object.keys(item)) {
      if (
        !['imei', 'iccid', 'imsi', 'operator', 'firmware', 'rssi', 'timings', 'faults', 'subnet'].includes(k)
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
