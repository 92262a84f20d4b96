import { ModemfleetError } from '../util/errors.js';

/**
 * Parsers for the EC25's answers (shared/reference/ec25.md). Each takes the information lines of
 * one answer and returns a typed value, or throws Ec25AnswerError naming the command and the text.
 * Strings from the modem are device data: validated, bounded, never passed on raw.
 */
export class Ec25AnswerError extends ModemfleetError {
  readonly command: string;
  readonly text: string;
  constructor(command: string, lines: readonly string[], expected: string) {
    const text = lines.join(' | ').slice(0, 200);
    super(
      'unexpected_answer',
      `${command}: unexpected answer ${JSON.stringify(text)} (expected ${expected})`,
    );
    this.name = 'Ec25AnswerError';
    this.command = command;
    this.text = text;
  }
}

export type RegistrationStat = 'idle' | 'home' | 'searching' | 'denied' | 'unknown' | 'roaming';
const REG_STATS: readonly RegistrationStat[] = ['idle', 'home', 'searching', 'denied', 'unknown', 'roaming'];

export type SimState = 'ready' | 'pin' | 'puk' | 'not_ready' | 'missing';

export interface Identity {
  manufacturer: string;
  model: string;
  firmware: string;
}

export interface Signal {
  technology: string | null;
  /** dBm; null when unknown. */
  rssi: number | null;
  rsrp: number | null;
  sinr: number | null;
  rsrq: number | null;
}

export interface ServingCell {
  state: string;
  technology: string | null;
  mcc: number | null;
  mnc: number | null;
  cellId: string | null;
  rsrp: number | null;
  rsrq: number | null;
  rssi: number | null;
  sinr: number | null;
}

/** Device text: printable ASCII, no quotes or backslashes, bounded. */
export function deviceText(value: string, max = 64): string {
  return value
    .replace(/[^\x20-\x7e]|["\\]/g, '')
    .trim()
    .slice(0, max);
}

function single(
  command: string,
  lines: readonly string[],
  pattern: RegExp,
  expected: string,
): RegExpExecArray {
  for (const line of lines) {
    const m = pattern.exec(line);
    if (m) return m;
  }
  throw new Ec25AnswerError(command, lines, expected);
}

const int = (s: string | undefined): number | null =>
  s === undefined || !/^-?\d+$/.test(s) ? null : Number(s);

export function parseImei(lines: readonly string[], command = 'AT+CGSN'): string {
  return single(command, lines, /^(\d{15})$/, 'a 15-digit IMEI')[1] as string;
}

/** `+QCCID: 8901260852290847433F` → digits without the trailing F. */
export function parseIccid(lines: readonly string[]): string {
  return single('AT+QCCID', lines, /^\+QCCID:\s*(\d{18,20})F?$/i, '+QCCID: 18-20 digits')[1] as string;
}

export function parseImsi(lines: readonly string[]): string {
  return single('AT+CIMI', lines, /^(\d{6,15})$/, 'a 6-15 digit IMSI')[1] as string;
}

/** ATI: `Quectel` / `EC25` / `Revision: EC25EFAR06A11M4G`. */
export function parseAti(lines: readonly string[]): Identity {
  const rev = single('ATI', lines, /^Revision:\s*([A-Za-z0-9_.-]{1,64})$/, 'Revision: <firmware>');
  const others = lines.filter((l) => !l.startsWith('Revision:'));
  if (others.length < 2) throw new Ec25AnswerError('ATI', lines, 'manufacturer, model and revision');
  return {
    manufacturer: deviceText(others[0] ?? ''),
    model: deviceText(others[1] ?? ''),
    firmware: rev[1] as string,
  };
}

export function parseText(command: string, lines: readonly string[]): string {
  const line = lines.find((l) => l.trim().length > 0);
  if (line === undefined) throw new Ec25AnswerError(command, lines, 'one line of text');
  return deviceText(line);
}

export function parseCpin(lines: readonly string[]): SimState {
  const m = single('AT+CPIN?', lines, /^\+CPIN:\s*(.+)$/, '+CPIN: <state>');
  switch (m[1]?.trim()) {
    case 'READY':
      return 'ready';
    case 'SIM PIN':
      return 'pin';
    case 'SIM PUK':
      return 'puk';
    case 'NOT READY':
      return 'not_ready';
    default:
      throw new Ec25AnswerError('AT+CPIN?', lines, 'READY, SIM PIN, SIM PUK or NOT READY');
  }
}

/** CME errors that mean "no usable SIM" (ModemManager: SIM_MISSING for 10, 13, 15). */
export const SIM_MISSING_CME = new Set([10, 13, 15]);

/** `+CSQ: <rssi>,<ber>`: rssi 0-31 → dBm = 2*rssi-113; 99 unknown. */
export function parseCsq(lines: readonly string[]): Signal {
  const m = single('AT+CSQ', lines, /^\+CSQ:\s*(\d{1,2}),(\d{1,2})$/, '+CSQ: <rssi>,<ber>');
  const raw = Number(m[1]);
  if (raw !== 99 && raw > 31) throw new Ec25AnswerError('AT+CSQ', lines, 'rssi 0-31 or 99');
  return { technology: null, rssi: raw === 99 ? null : 2 * raw - 113, rsrp: null, sinr: null, rsrq: null };
}

/** `+QCSQ: "LTE",<rssi>,<rsrp>,<sinr>,<rsrq>` or `+QCSQ: "NOSERVICE"`. */
export function parseQcsq(lines: readonly string[]): Signal {
  const m = single(
    'AT+QCSQ',
    lines,
    /^\+QCSQ:\s*"([A-Z0-9 ]{1,16})"((?:,-?\d{1,4})*)$/,
    '+QCSQ: "<tech>",...',
  );
  const tech = m[1] as string;
  if (tech === 'NOSERVICE') return { technology: null, rssi: null, rsrp: null, sinr: null, rsrq: null };
  const values = (m[2] ?? '').split(',').slice(1).map(int);
  return {
    technology: tech,
    rssi: values[0] ?? null,
    rsrp: values[1] ?? null,
    sinr: values[2] ?? null,
    rsrq: values[3] ?? null,
  };
}

export interface Operator {
  name: string | null;
  technology: string | null;
}

const ACT: Record<string, string> = {
  '0': 'GSM',
  '2': 'UMTS',
  '3': 'GSM',
  '4': 'UMTS',
  '5': 'UMTS',
  '6': 'UMTS',
  '7': 'LTE',
};

/** `+COPS: 0,0,"Vodafone",7`; unregistered `+COPS: 0`. */
export function parseCops(lines: readonly string[]): Operator {
  const m = single(
    'AT+COPS?',
    lines,
    /^\+COPS:\s*(\d)(?:,(\d),"([^"]{0,64})"(?:,(\d))?)?$/,
    '+COPS: <mode>[,<format>,"<oper>"[,<AcT>]]',
  );
  if (m[3] === undefined) return { name: null, technology: null };
  return { name: deviceText(m[3]) || null, technology: m[4] !== undefined ? (ACT[m[4]] ?? null) : null };
}

/** `+CREG: <n>,<stat>[,...]` (answer) or `+CREG: <stat>[,...]` (URC); same for +CEREG. */
export function parseCreg(lines: readonly string[], command = 'AT+CREG?'): RegistrationStat {
  const m = single(command, lines, /^\+C(?:E|G)?REG:\s*(\d)(?:,(\d))?(?:,.*)?$/, '+CREG: <n>,<stat>');
  const stat = m[2] !== undefined ? Number(m[2]) : Number(m[1]);
  const value = REG_STATS[stat];
  if (value === undefined) throw new Ec25AnswerError(command, lines, 'stat 0-5');
  return value;
}

/** The stat of an unsolicited `+CREG: <stat>[,<lac>,<ci>...]` (n=1 or 2). */
export function parseCregUrc(line: string): RegistrationStat | undefined {
  const m = /^\+C(?:E|G)?REG:\s*(\d)(?:,"?[0-9A-Fa-f]+"?)*$/.exec(line);
  return m ? REG_STATS[Number(m[1])] : undefined;
}

export function parseServingCell(lines: readonly string[]): ServingCell {
  const m = single(
    'AT+QENG="servingcell"',
    lines,
    /^\+QENG:\s*"servingcell",(.*)$/,
    '+QENG: "servingcell",...',
  );
  const f = (m[1] ?? '').split(',').map((x) => x.replace(/"/g, ''));
  const state = f[0] ?? '';
  if (!/^(SEARCH|LIMSRV|NOCONN|CONNECT)$/.test(state))
    throw new Ec25AnswerError('AT+QENG="servingcell"', lines, 'a state');
  if (f[1] !== 'LTE')
    return {
      state,
      technology: f[1] ?? null,
      mcc: null,
      mnc: null,
      cellId: null,
      rsrp: null,
      rsrq: null,
      rssi: null,
      sinr: null,
    };
  // "LTE","FDD",mcc,mnc,cellid,pcid,earfcn,band,ul_bw,dl_bw,tac,rsrp,rsrq,rssi,sinr,srxlev
  return {
    state,
    technology: 'LTE',
    mcc: int(f[3]),
    mnc: int(f[4]),
    cellId: /^[0-9A-F]{1,8}$/i.test(f[5] ?? '') ? (f[5] as string) : null,
    rsrp: int(f[12]),
    rsrq: int(f[13]),
    rssi: int(f[14]),
    sinr: int(f[15]),
  };
}

export interface PdpContext {
  cid: number;
  type: string;
  apn: string;
}

export function parseCgdcont(lines: readonly string[]): PdpContext[] {
  const out: PdpContext[] = [];
  for (const line of lines) {
    const m = /^\+CGDCONT:\s*(\d+),"([A-Z0-9]+)","([^"]{0,62})"/.exec(line);
    if (!m) throw new Ec25AnswerError('AT+CGDCONT?', lines, '+CGDCONT: <cid>,"<type>","<apn>",...');
    out.push({ cid: Number(m[1]), type: m[2] as string, apn: deviceText(m[3] ?? '') });
  }
  return out;
}

export function parseQnetdevctl(lines: readonly string[]): { connected: boolean } {
  const m = single(
    'AT+QNETDEVCTL?',
    lines,
    /^\+QNETDEVCTL:\s*(\d),(\d+),(\d),(\d)$/,
    '+QNETDEVCTL: <op>,<cid>,<urc>,<state>',
  );
  return { connected: m[4] === '1' };
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** `+CGPADDR: 1,"10.64.12.7"` → the address, or null for none (0.0.0.0 or empty). */
export function parseCgpaddr(lines: readonly string[]): string | null {
  const m = single('AT+CGPADDR=1', lines, /^\+CGPADDR:\s*1(?:,"?([0-9.]*)"?)?/, '+CGPADDR: 1,"<address>"');
  const address = m[1] ?? '';
  if (address === '' || address === '0.0.0.0') return null;
  if (!IPV4.test(address)) throw new Ec25AnswerError('AT+CGPADDR=1', lines, 'an IPv4 address');
  return address;
}

export function parseCfun(lines: readonly string[]): number {
  const m = single('AT+CFUN?', lines, /^\+CFUN:\s*(\d)$/, '+CFUN: <fun>');
  return Number(m[1]);
}
