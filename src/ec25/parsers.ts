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

export type RegistrationStat =
  'idle' | 'home' | 'searching' | 'denied' | 'unknown' | 'roaming' | 'sms_only' | 'emergency';
/**
 * 3GPP TS 27.007 `<stat>` 0-10 (docs/ec25.md, registration): 0 not registered, 1 home, 2 searching,
 * 3 denied, 4 unknown, 5 roaming, 6/7 SMS only (home/roaming), 8 emergency bearer services only,
 * 9/10 "CSFB not preferred" (home/roaming): registered, only voice fallback differs.
 */
const REG_STATS: readonly RegistrationStat[] = [
  'idle',
  'home',
  'searching',
  'denied',
  'unknown',
  'roaming',
  'sms_only',
  'sms_only',
  'emergency',
  'home',
  'roaming',
  // 11: emergency bearer services only (newer 27.007 releases)
  'emergency',
];

/** The three registration domains: circuit-switched, packet-switched (2G/3G), EPS (LTE). */
export type RegistrationDomain = 'cs' | 'ps' | 'eps';
export const DOMAIN_COMMAND: Record<RegistrationDomain, string> = { cs: 'CREG', ps: 'CGREG', eps: 'CEREG' };

export interface Registrations {
  cs: RegistrationStat | null;
  ps: RegistrationStat | null;
  eps: RegistrationStat | null;
}

const DATA_REGISTERED: readonly RegistrationStat[] = ['home', 'roaming'];

/**
 * Registration for data: EPS or PS registered (home or roaming, stat 1, 5, 9, 10), whatever CS says:
 * data-only SIMs and EPS-only attach show `+CREG: 0,0` while `+CEREG: 0,1`. Otherwise the most
 * telling of the data domains: denied, then searching, then what EPS (else PS) says.
 */
export function dataRegistration(r: Pick<Registrations, 'ps' | 'eps'>): RegistrationStat {
  const data = [r.eps, r.ps].filter((s): s is RegistrationStat => s !== null);
  const registered = data.find((s) => DATA_REGISTERED.includes(s));
  if (registered) return registered;
  for (const s of ['denied', 'searching'] as const) if (data.includes(s)) return s;
  return data[0] ?? 'unknown';
}

export type SimState = 'ready' | 'pin' | 'puk' | 'not_ready' | 'busy' | 'failure' | 'missing';

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
  /** As the modem reports it: `+QCSQ` LTE SINR is raw 0-250. */
  sinr: number | null;
  /** SINR in dB (raw/5 − 20 for LTE); null when unknown. */
  sinrDb: number | null;
  rsrq: number | null;
}

/** LTE SINR raw 0-250 → dB (−20 to +30, in 0.2 dB steps); out of range: unknown. */
export function sinrToDb(raw: number | null): number | null {
  if (raw === null || raw < 0 || raw > 250) return null;
  return Math.round((raw / 5 - 20) * 10) / 10;
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
  sinrDb: number | null;
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

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

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

/** CME errors that mean "no usable SIM": 10 not inserted, 15 wrong. */
export const SIM_MISSING_CME = new Set([10, 15]);
/** CME errors often transient (retried before giving up): 13 SIM failure, 14 SIM busy. */
export const SIM_TRANSIENT_CME: ReadonlyMap<number, SimState> = new Map([
  [13, 'failure'],
  [14, 'busy'],
]);

/** `+CSQ: <rssi>,<ber>`: rssi 0-31 → dBm = 2*rssi-113; 99 unknown. */
export function parseCsq(lines: readonly string[]): Signal {
  const m = single('AT+CSQ', lines, /^\+CSQ:\s*(\d{1,2}),(\d{1,2})$/, '+CSQ: <rssi>,<ber>');
  const raw = Number(m[1]);
  if (raw !== 99 && raw > 31) throw new Ec25AnswerError('AT+CSQ', lines, 'rssi 0-31 or 99');
  return {
    technology: null,
    rssi: raw === 99 ? null : 2 * raw - 113,
    rsrp: null,
    sinr: null,
    sinrDb: null,
    rsrq: null,
  };
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
  if (tech === 'NOSERVICE')
    return { technology: null, rssi: null, rsrp: null, sinr: null, sinrDb: null, rsrq: null };
  const values = (m[2] ?? '').split(',').slice(1).map(int);
  const sinr = values[2] ?? null;
  return {
    technology: tech,
    rssi: values[0] ?? null,
    rsrp: values[1] ?? null,
    sinr,
    // only LTE reports SINR in the raw 0-250 scale (docs/ec25.md, signal)
    sinrDb: tech === 'LTE' ? sinrToDb(sinr) : null,
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

const statOf = (command: string, lines: readonly string[], stat: number): RegistrationStat => {
  const value = REG_STATS[stat];
  if (value === undefined) throw new Ec25AnswerError(command, lines, 'stat 0-10');
  return value;
};

/**
 * The answer to `AT+CREG?` / `AT+CGREG?` / `AT+CEREG?`: `+CEREG: <n>,<stat>[,"<tac>","<ci>",<AcT>...]`
 * (location fields in mode 2).
 */
export function parseCreg(lines: readonly string[], command = 'AT+CREG?'): RegistrationStat {
  const m = single(command, lines, /^\+C(?:E|G)?REG:\s*(\d),\s*(\d{1,2})(?:,.*)?$/, '+CREG: <n>,<stat>');
  return statOf(command, lines, Number(m[2]));
}

/**
 * An unsolicited `+CREG: <stat>` / `+CGREG:` / `+CEREG:` (mode 1), with `,"<lac|tac>","<ci>"[,<AcT>]`
 * in mode 2: its domain and stat. The location fields are quoted, which tells a URC from a query
 * answer (`+CEREG: <n>,<stat>`). Not a registration URC: undefined.
 */
export function parseRegistrationUrc(
  line: string,
): { domain: RegistrationDomain; stat: RegistrationStat } | undefined {
  const m = /^\+(CREG|CGREG|CEREG):\s*(\d{1,2})((?:,"[0-9A-Fa-f]{0,8}")*(?:,\d{1,2})*)$/.exec(line);
  if (!m || (m[3] !== '' && !m[3]?.startsWith(',"'))) return undefined;
  const stat = REG_STATS[Number(m[2])];
  if (stat === undefined) return undefined;
  const domain = m[1] === 'CREG' ? 'cs' : m[1] === 'CGREG' ? 'ps' : 'eps';
  return { domain, stat };
}

/**
 * `+CGEV:` URCs (after `AT+CGEREP=2,1`) that mean the data call is gone: the network or the modem
 * deactivated the PDN of `cid` (or every context: `NW DEACT`, detach). Returns what happened, or
 * undefined for events that leave cid 1 up (activations, modifications, other cids).
 */
export function parseCgev(line: string, cid = 1): string | undefined {
  const m = /^\+CGEV:\s*(.{1,120})$/.exec(line);
  if (!m) return undefined;
  const text = (m[1] ?? '').trim();
  if (/^(NW|ME) DETACH$/.test(text)) return text;
  // 27.007 `NW PDN DEACT <cid>`; Quectel's manuals also list `PDN DEACT <cid>` without NW/ME
  const pdn = /^(?:(?:NW|ME) )?PDN DEACT (\d{1,2})\b/.exec(text);
  if (pdn) return Number(pdn[1]) === cid ? text : undefined;
  // 27.007 older forms: `NW DEACT <PDP_type>, <PDP_addr>[,<cid>]`, `ME DEACT ...`
  const deact = /^(NW|ME) DEACT\b(?:.*,\s*(\d{1,2}))?$/.exec(text);
  if (deact) return deact[2] === undefined || Number(deact[2]) === cid ? text : undefined;
  return undefined;
}

/** `+QCFG: "usbnet",<n>`: 0 QMI/RmNet (the EC25 default), 1 ECM, 2 MBIM, 3 RNDIS. */
export function parseUsbnet(lines: readonly string[]): number {
  const m = single('AT+QCFG="usbnet"', lines, /^\+QCFG:\s*"usbnet",\s*(\d)$/i, '+QCFG: "usbnet",<n>');
  return Number(m[1]);
}

/**
 * `AT$QCRMCALL?`: `$QCRMCALL: 1,V4` (some firmware `1, V4` or `1,4`) per call up; without a call
 * only OK (undocumented: the manual says OK or ERROR; an ERROR here reaches the caller).
 * True when an IPv4 call is up.
 */
export function parseQcrmcall(lines: readonly string[]): boolean {
  for (const line of lines) {
    // `V4` in logs and Quectel's example; one manual example shows the numeric form `1,4`
    const m = /^\$QCRMCALL:\s*(\d),\s*V?([46])$/i.exec(line);
    if (!m) throw new Ec25AnswerError('AT$QCRMCALL?', lines, '$QCRMCALL: <state>,V4|V6');
    if (m[1] === '1' && m[2] === '4') return true;
  }
  return false;
}

export interface ContextSettings {
  address: string;
  /** Prefix length from the subnet mask. */
  prefix: number;
  gateway: string | null;
  dns: string[];
  /** IPv4 MTU, when the modem reports it (27.007's optional field); null otherwise. */
  mtu: number | null;
}

/** A dotted mask → prefix length; null for a mask that is not contiguous. */
function maskPrefix(mask: string): number | null {
  const bits = mask
    .split('.')
    .map((o) => Number(o).toString(2).padStart(8, '0'))
    .join('');
  const m = /^(1*)0*$/.exec(bits);
  return m ? (m[1]?.length ?? 0) : null;
}

/**
 * `+CGCONTRDP: <cid>,<bearer>,"<apn>","<a.b.c.d.m.m.m.m>","<gw>","<dns1>","<dns2>"[,...,<mtu>]`
 * (3GPP TS 27.007; address and mask in one dotted string). The line for cid 1, or null when the
 * context is not active (no line).
 */
export function parseCgcontrdp(lines: readonly string[], cid = 1): ContextSettings | null {
  for (const line of lines) {
    const m = /^\+CGCONTRDP:\s*(\d{1,2}),\s*(\d{1,2}),\s*"[^"]{0,100}"(.*)$/.exec(line);
    if (!m) throw new Ec25AnswerError('AT+CGCONTRDP=1', lines, '+CGCONTRDP: <cid>,<bearer>,"<apn>",...');
    if (Number(m[1]) !== cid) continue;
    const fields = (m[3] ?? '')
      .split(',')
      .slice(1)
      .map((f) => f.trim().replace(/^"|"$/g, ''));
    const [addrMask = '', gw = '', dns1 = '', dns2 = ''] = fields;
    const octets = addrMask.split('.');
    if (octets.length !== 8)
      throw new Ec25AnswerError('AT+CGCONTRDP=1', lines, 'an IPv4 address and mask (8 octets)');
    const address = octets.slice(0, 4).join('.');
    const mask = octets.slice(4).join('.');
    const prefix = IPV4.test(mask) ? maskPrefix(mask) : null;
    if (!IPV4.test(address) || prefix === null)
      throw new Ec25AnswerError('AT+CGCONTRDP=1', lines, 'an IPv4 address and mask');
    if (address === '0.0.0.0') return null;
    const ipOrNull = (v: string): string | null => (IPV4.test(v) && v !== '0.0.0.0' ? v : null);
    // 27.007: ...,<DNS2>,<P-CSCF1>,<P-CSCF2>,<IM_CN>,<LIPA>,<IPv4_MTU>: the 12th field of the line
    const mtu = int(fields[8]);
    return {
      address,
      prefix,
      gateway: ipOrNull(gw),
      dns: [dns1, dns2].map(ipOrNull).filter((d): d is string => d !== null),
      mtu: mtu !== null && mtu >= 576 && mtu <= 9000 ? mtu : null,
    };
  }
  return null;
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
      sinrDb: null,
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
    // not converted: one public comparison found `+QENG` SINR already in dB on other firmware
    sinrDb: null,
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
