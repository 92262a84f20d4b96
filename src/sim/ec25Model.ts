/**
 * One simulated Quectel EC25: its state and its answers, in the formats of docs/ec25.md (sources there).
 * Pure: time comes from `now()`, chance from `random()`; the PTY host (simModem.ts) turns answers
 * and URCs into bytes on a real tty. State that follows time (attach, the host's call) is brought
 * up to date lazily by `sync()`, which every command and the host's tick call.
 */

/** What the network says to EPS registration (`+CEREG`). */
export type Registration = 'ok' | 'roaming' | 'denied' | 'searching';

export interface SimFaults {
  /** AT+CPIN? / AT+CIMI / AT+QCCID → +CME ERROR: 10. */
  noSim: boolean;
  /** +CPIN: SIM PIN. */
  pinLocked: boolean;
  /** AT+CPIN? / AT+CIMI / AT+QCCID → +CME ERROR: 13, for good. */
  simFailure: boolean;
  /** After each boot (RDY) the SIM is busy this long: +CME ERROR: 14, no attach yet (docs/ec25.md §5). */
  simBusyMs: number;
  /** EPS (+CEREG): ok (1 once attached), roaming (5 once attached), denied (3), searching (2). */
  registration: Registration;
  /** CS (+CREG) stat 0-11; null: the same as EPS. A data-only SIM: 0 (or 2) (docs/ec25.md §3). */
  cs: number | null;
  /** PS (+CGREG) stat 0-11; null: the same as EPS. */
  ps: number | null;
  /** AT$QCRMCALL=1,1 (and AT+QNETDEVCTL=1,...) → ERROR. */
  dataCallRefused: boolean;
  /** AT$QCRMCALL=1,1 → OK alone, and no call comes up. */
  callSilentlyFails: boolean;
  /** Stops answering entirely (bytes are swallowed). */
  hang: boolean;
  /** Extra latency per answer, ms. */
  slowMs: number;
  /** Probability of garbage bytes before an answer. */
  garbage: number;
  /** Probability that a new attach gets the previous bearer address back. */
  sameAddress: number;
}

/** A duration: fixed, or `[min, max]` drawn anew (uniformly, from the model's random) per event. */
export type Duration = number | readonly [number, number];

export interface SimTimings {
  /** The tty appears → RDY. */
  bootMs: Duration;
  /** Every answer. */
  latencyMs: Duration;
  /** Radio on and SIM ready → EPS registered, bearer up. */
  attachMs: Duration;
  /** AT+CFUN=1,1 / a USB reset: how long the tty is gone. */
  resetMs: Duration;
  /** AT$QCRMCALL=1,1 → its answer (the call is up then). Default 0. */
  callMs?: Duration;
  /** AT+CFUN=0 / =4 → OK. Default 0. */
  cfunMs?: Duration;
}

export interface SimProfile {
  imei: string;
  iccid: string;
  imsi: string;
  operator: string;
  mcc: number;
  mnc: number;
  firmware: string;
  /** CSQ rssi 0-31, drifting within ±2. */
  rssi: number;
  timings: SimTimings;
  faults: SimFaults;
  /**
   * Bearer addresses come from this /24 (`"100.65.3"` → 100.65.3.10-250, mask 255.255.255.0,
   * gateway .1), as the lab's carrier link of this modem routes them; unset: anywhere in
   * 10.64.0.0/10 with a /29 around it.
   */
  subnet?: string | undefined;
  /** `AT+QCFG="usbnet"` at power-on: 0 QMI/RmNet (the EC25 default), 1 ECM, 2 MBIM, 3 RNDIS. */
  usbnet?: UsbNet | undefined;
  /** DNS servers of the bearer (`AT+CGCONTRDP`). */
  dns?: readonly [string, string] | undefined;
  /** Serving cell: tracking area code and cell id (shown in hex). */
  tac?: number | undefined;
  cellId?: number | undefined;
}

export type UsbNet = 0 | 1 | 2 | 3;

export const NO_FAULTS: SimFaults = {
  noSim: false,
  pinLocked: false,
  simFailure: false,
  simBusyMs: 0,
  registration: 'ok',
  cs: null,
  ps: null,
  dataCallRefused: false,
  callSilentlyFails: false,
  hang: false,
  slowMs: 0,
  garbage: 0,
  sameAddress: 0,
};

export const DEFAULT_DNS: readonly [string, string] = ['10.74.210.210', '10.74.210.211'];

export const BOOT_URCS = ['RDY', '+CPIN: READY', '+QUSIM: 1', '+QIND: SMS DONE', '+QIND: PB DONE'];

export interface Answer {
  /** Raw bytes to write (echo, framed lines), or nothing (hang). */
  text: string;
  delayMs: number;
  /** The command asked for a reset: the port goes away and comes back. */
  reset?: boolean;
}

/** 3GPP TS 27.007 §9.2 texts for `AT+CMEE=2` (docs/ec25.md §5). */
const CME_TEXT: Record<number, string> = {
  3: 'operation not allowed',
  4: 'operation not supported',
  10: 'SIM not inserted',
  11: 'SIM PIN required',
  12: 'SIM PUK required',
  13: 'SIM failure',
  14: 'SIM busy',
  30: 'no network service',
  100: 'unknown',
};

type Domain = 'creg' | 'cgreg' | 'cereg';
const DOMAINS: readonly Domain[] = ['creg', 'cgreg', 'cereg'];
const REGISTERED = new Set([1, 5]);

export const frame = (lines: readonly string[]): string => lines.map((l) => `\r\n${l}\r\n`).join('');

const hex = (n: number): string => n.toString(16).toUpperCase();

export class Ec25Model {
  echo = true;
  /** Power-on default 1 (numeric), as the driver and the tests have always seen it. */
  cmee = 1;
  cfun = 1;
  /** `AT+CREG=`/`AT+CGREG=`/`AT+CEREG=` modes (0 none, 1 stat URCs, 2 with location). */
  readonly regMode: Record<Domain, number> = { creg: 0, cgreg: 0, cereg: 0 };
  /** `AT+CGEREP` mode: +CGEV URCs only when non-zero. */
  cgerep = 0;
  apn = 'internet';
  /** The USB network function in effect (docs/ec25.md §1: a change needs a reset). */
  usbnet: UsbNet;
  /** Written by `AT+QCFG="usbnet",<n>`, in effect from the next power-on. */
  usbnetPending: UsbNet | null = null;
  private bearer: string | null = null;
  /** Drawn per power-on: how long from the tty appearing to RDY. */
  bootDelayMs = 0;
  private powered = true;
  private attached = false;
  private attachStartAt: number | null = null;
  private attachTakesMs = 0;
  private simReadyAt = 0;
  /** The host's call (QMI/RmNet or ECM/RNDIS dial): up from this time on; null: down. */
  private callUpAt: number | null = null;
  private rssi: number;
  private lastAddress: string | null = null;
  private readonly lastStat: Record<Domain, number> = { creg: -1, cgreg: -1, cereg: -1 };
  private urcs: string[] = [];

  constructor(
    readonly profile: SimProfile,
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {
    this.rssi = profile.rssi;
    this.usbnet = profile.usbnet ?? 0;
    this.powerOn();
  }

  get faults(): SimFaults {
    return this.profile.faults;
  }

  /** A duration of the profile, drawn for one event. */
  draw(key: keyof SimTimings): number {
    const d = this.profile.timings[key] ?? 0;
    if (typeof d === 'number') return d;
    const [min, max] = d;
    return Math.round(min + this.random() * (max - min));
  }

  /** Back to power-on state (after AT+CFUN=1,1 or a replug); a pending usbnet takes effect. */
  powerOn(): void {
    this.echo = true;
    this.cmee = 1;
    this.cfun = 1;
    for (const d of DOMAINS) {
      this.regMode[d] = 0;
      this.lastStat[d] = -1;
    }
    this.cgerep = 0;
    this.powered = true;
    if (this.usbnetPending !== null) {
      this.usbnet = this.usbnetPending;
      this.profile.usbnet = this.usbnet; // kept in NV
      this.usbnetPending = null;
    }
    this.attached = false;
    this.bearer = null;
    this.callUpAt = null;
    this.urcs = [];
    this.bootDelayMs = this.draw('bootMs');
    this.simReadyAt = this.now() + this.bootDelayMs + this.faults.simBusyMs;
    this.startAttach(this.simReadyAt);
  }

  private startAttach(at: number): void {
    this.attachStartAt = at;
    this.attachTakesMs = this.draw('attachMs');
  }

  /** RDY, then (SIM present, and once it is no longer busy) the SIM's URCs. */
  bootText(): string {
    return frame(['RDY']);
  }

  /** The URCs that follow RDY after `simBusyMs`; none without a usable SIM. */
  simReadyText(): string {
    if (this.faults.noSim || this.faults.simFailure) return '';
    if (this.faults.pinLocked) return frame(['+CPIN: SIM PIN']);
    return frame(BOOT_URCS.slice(1));
  }

  /** Unplugged: no radio, no bearer, no call until the next `powerOn()`. */
  powerOff(): void {
    this.powered = false;
    this.attached = false;
    this.bearer = null;
    this.callUpAt = null;
  }

  get hostCall(): boolean {
    return this.callUpAt !== null && this.now() >= this.callUpAt;
  }

  /** The old name of the host's call. */
  get dataCall(): boolean {
    return this.hostCall;
  }

  /** The default bearer's address while attached (AT+CGPADDR shows it, call or no call). */
  get address(): string | null {
    this.sync();
    return this.bearer;
  }

  get isAttached(): boolean {
    this.sync();
    return this.attached;
  }

  private simUsable(): boolean {
    return !this.faults.noSim && !this.faults.pinLocked && !this.faults.simFailure && !this.simBusy();
  }

  private simBusy(): boolean {
    return this.faults.simBusyMs > 0 && this.now() < this.simReadyAt;
  }

  /** Brings attach, bearer and call up to date with time and faults, queueing the URCs. */
  sync(): void {
    if (!this.powered) return;
    const canAttach =
      this.cfun === 1 &&
      this.simUsable() &&
      (this.faults.registration === 'ok' || this.faults.registration === 'roaming');
    if (!canAttach) {
      if (this.attached) this.detach();
      this.attachStartAt = null;
    } else if (!this.attached) {
      if (this.attachStartAt === null) this.startAttach(this.now());
      const start = this.attachStartAt ?? this.now();
      if (this.now() >= start + this.attachTakesMs) this.attach();
    }
    this.registrationUrcs();
  }

  private attach(): void {
    this.attached = true;
    this.bearer = this.newAddress();
    this.lastAddress = this.bearer;
  }

  /** Registration lost: the bearer and with it the host's call are gone. */
  private detach(): void {
    this.attached = false;
    this.bearer = null;
    this.callUpAt = null;
  }

  /** Queued URCs, oldest first (the host writes them out). */
  takeUrcs(): string[] {
    this.sync();
    const out = this.urcs;
    this.urcs = [];
    return out;
  }

  /** The network deactivates the default PDN: the host's call drops, the modem stays attached (docs/ec25.md §4). */
  dropCall(): void {
    this.sync();
    this.callUpAt = null;
    if (this.cgerep > 0) this.urcs.push('+CGEV: NW PDN DEACT 1');
  }

  /** The network detaches the modem: registration drops, then it attaches again after attachMs. */
  detachNetwork(): void {
    this.sync();
    if (this.cgerep > 0) this.urcs.push('+CGEV: NW DETACH');
    this.detach();
    this.startAttach(this.now());
    this.registrationUrcs();
  }

  /** EPS: 0 radio off or no usable SIM, 3 denied, 2 searching, 1 home / 5 roaming once attached. */
  registrationStat(domain: Domain = 'cereg'): number {
    if (this.cfun !== 1 || !this.simUsable()) return 0;
    const fixed = domain === 'creg' ? this.faults.cs : domain === 'cgreg' ? this.faults.ps : null;
    if (fixed !== null && fixed !== undefined) return fixed;
    if (this.faults.registration === 'denied') return 3;
    if (this.faults.registration === 'searching' || !this.attached) return 2;
    return this.faults.registration === 'roaming' ? 5 : 1;
  }

  private tac(): string {
    return hex(this.profile.tac ?? 0x603);
  }

  private cellId(): string {
    return hex(this.profile.cellId ?? 0x7676a09);
  }

  /**
   * `+CEREG: <n>,<stat>[,"<tac>","<ci>",7]` (query) or `+CEREG: <stat>[,...]` (URC); CREG/CGREG
   * carry the lac there; location only while registered (docs/ec25.md §3).
   */
  private regLine(domain: Domain, stat: number, query: boolean): string {
    const mode = this.regMode[domain];
    const head = `+${domain.toUpperCase()}: ${query ? `${mode},` : ''}${stat}`;
    if (mode === 2 && REGISTERED.has(stat)) return `${head},"${this.tac()}","${this.cellId()}",7`;
    return head;
  }

  private registrationUrcs(): void {
    for (const d of DOMAINS) {
      const stat = this.registrationStat(d);
      if (stat === this.lastStat[d]) continue;
      this.lastStat[d] = stat;
      if (this.regMode[d] > 0) this.urcs.push(this.regLine(d, stat, false));
    }
  }

  private drift(): number {
    this.rssi = Math.max(3, Math.min(31, this.rssi + Math.round((this.random() - 0.5) * 2)));
    return this.rssi;
  }

  /** rssi, rsrp, rsrq in dBm/dB and SINR raw 0-250 (dB = raw/5 − 20), docs/ec25.md §6. */
  private lteSignal(csq: number): { rssi: number; rsrp: number; rsrq: number; sinr: number } {
    const rssi = 2 * csq - 113;
    const sinrDb = Math.max(-20, Math.min(30, Math.round((csq - 10) * 1.2)));
    return {
      rssi,
      rsrp: rssi - 30,
      rsrq: Math.max(-20, Math.min(-3, -20 + Math.round(csq / 2))),
      sinr: (sinrDb + 20) * 5,
    };
  }

  /** A CME error as `AT+CMEE` asks: 0 plain ERROR, 1 numeric, 2 verbose. */
  private cme(n: number): string[] {
    if (this.cmee === 0) return ['ERROR'];
    if (this.cmee === 2) return [`+CME ERROR: ${CME_TEXT[n] ?? 'unknown'}`];
    return [`+CME ERROR: ${n}`];
  }

  /** Commands that need the SIM: not inserted 10, failure 13, busy 14, PIN 11. */
  private simError(pinCounts = true): string[] | undefined {
    if (this.faults.noSim) return this.cme(10);
    if (this.faults.simFailure) return this.cme(13);
    if (this.simBusy()) return this.cme(14);
    if (pinCounts && this.faults.pinLocked) return this.cme(11);
    return undefined;
  }

  private newAddress(): string {
    if (this.lastAddress && this.random() < this.faults.sameAddress) return this.lastAddress;
    for (;;) {
      const a = this.profile.subnet
        ? `${this.profile.subnet}.${10 + Math.floor(this.random() * 241)}`
        : `10.${64 + Math.floor(this.random() * 64)}.${Math.floor(this.random() * 256)}.${1 + Math.floor(this.random() * 254)}`;
      if (a !== this.lastAddress) return a;
    }
  }

  /** Mask and gateway of the bearer: the lab's /24 with .1, else a /29 around the address. */
  private bearerNet(address: string): { mask: string; gateway: string } {
    if (this.profile.subnet) return { mask: '255.255.255.0', gateway: `${this.profile.subnet}.1` };
    const o = address.split('.').map(Number);
    const last = o[3] ?? 0;
    const net = last & ~7;
    const gw = net + 1 === last ? net + 2 : net + 1;
    return { mask: '255.255.255.248', gateway: `${o[0]}.${o[1]}.${o[2]}.${gw}` };
  }

  handle(command: string): Answer {
    const echo = this.echo ? `${command}\r` : '';
    if (this.faults.hang) return { text: '', delayMs: 0 };
    this.sync();
    const result = this.answer(command.trim());
    const garbage = this.random() < this.faults.garbage ? '\x00\xff#@!\x07' : '';
    const delayMs = this.draw('latencyMs') + this.faults.slowMs;
    if (result === 'reset') return { text: echo + frame(['OK']), delayMs, reset: true };
    const [lines, extraMs] = Array.isArray(result) ? [result, 0] : [result.lines, result.delayMs];
    return { text: echo + garbage + frame(lines), delayMs: delayMs + extraMs };
  }

  private answer(cmd: string): string[] | { lines: string[]; delayMs: number } | 'reset' {
    const upper = cmd.toUpperCase();
    const registered = (): boolean => REGISTERED.has(this.registrationStat('cereg'));
    switch (upper) {
      case 'AT':
        return ['OK'];
      case 'ATE0':
        this.echo = false;
        return ['OK'];
      case 'ATE1':
        this.echo = true;
        return ['OK'];
      case 'ATI':
        return ['Quectel', 'EC25', `Revision: ${this.profile.firmware}`, 'OK'];
      case 'AT+CGMI':
        return ['Quectel', 'OK'];
      case 'AT+CGMM':
        return ['EC25', 'OK'];
      case 'AT+CGMR':
        return [this.profile.firmware, 'OK'];
      case 'AT+CGSN':
      case 'AT+GSN':
        return [this.profile.imei, 'OK'];
      case 'AT+CMEE?':
        return [`+CMEE: ${this.cmee}`, 'OK'];
      case 'AT+QCCID':
        return this.simError(false) ?? [`+QCCID: ${this.profile.iccid}F`, 'OK'];
      case 'AT+CIMI':
        return this.simError() ?? [this.profile.imsi, 'OK'];
      case 'AT+CPIN?':
        return this.simError(false) ?? [this.faults.pinLocked ? '+CPIN: SIM PIN' : '+CPIN: READY', 'OK'];
      case 'AT+CSQ':
        return [`+CSQ: ${this.cfun === 1 ? this.drift() : 99},99`, 'OK'];
      case 'AT+QCSQ': {
        if (!registered()) return ['+QCSQ: "NOSERVICE"', 'OK'];
        const s = this.lteSignal(this.drift());
        return [`+QCSQ: "LTE",${s.rssi},${s.rsrp},${s.sinr},${s.rsrq}`, 'OK'];
      }
      case 'AT+COPS?':
        return [registered() ? `+COPS: 0,0,"${this.profile.operator}",7` : '+COPS: 0', 'OK'];
      case 'AT+CREG?':
      case 'AT+CGREG?':
      case 'AT+CEREG?': {
        const d = upper.slice(3, -1).toLowerCase() as Domain;
        return [this.regLine(d, this.registrationStat(d), true), 'OK'];
      }
      case 'AT+QENG="SERVINGCELL"': {
        if (!registered()) return ['+QENG: "servingcell","SEARCH"', 'OK'];
        const s = this.lteSignal(this.rssi);
        const mnc = String(this.profile.mnc).padStart(2, '0');
        const state = this.hostCall ? 'CONNECT' : 'NOCONN';
        return [
          `+QENG: "servingcell","${state}","LTE","FDD",${this.profile.mcc},${mnc},${this.cellId()},188,6300,20,3,3,${this.tac()},${s.rsrp},${s.rsrq},${s.rssi},${s.sinr},23`,
          'OK',
        ];
      }
      case 'AT+QCFG="USBNET"':
        return [`+QCFG: "usbnet",${this.usbnet}`, 'OK'];
      case 'AT+CGDCONT?':
        return [`+CGDCONT: 1,"IP","${this.apn}","0.0.0.0",0,0,0,0`, 'OK'];
      case 'AT+CGPADDR=1':
      case 'AT+CGPADDR':
        // the bearer's address as soon as attached, whether or not the host started a call (docs/ec25.md §2d)
        return [`+CGPADDR: 1,"${this.bearer ?? '0.0.0.0'}"`, 'OK'];
      case 'AT+CGCONTRDP=1':
      case 'AT+CGCONTRDP': {
        // docs/ec25.md §2c: address and mask in one field; nothing active → OK alone
        if (!this.bearer) return ['OK'];
        const { mask, gateway } = this.bearerNet(this.bearer);
        const [dns1, dns2] = this.profile.dns ?? DEFAULT_DNS;
        return [
          `+CGCONTRDP: 1,5,"${this.apn}","${this.bearer}.${mask}","${gateway}","${dns1}","${dns2}"`,
          'OK',
        ];
      }
      case 'AT+CGEREP?':
        return [`+CGEREP: ${this.cgerep},1`, 'OK'];
      case 'AT$QCRMCALL?':
        return this.hostCall ? ['$QCRMCALL: 1,V4', 'OK'] : ['OK'];
      case 'AT$QCRMCALL=1,1':
        return this.rmnetCall();
      case 'AT$QCRMCALL=0,1':
        this.callUpAt = null;
        return ['OK'];
      case 'AT+QNETDEVCTL?':
        if (!this.ecmMode()) return ['ERROR'];
        return [`+QNETDEVCTL: ${this.hostCall ? 1 : 0},1,1,${this.hostCall ? 1 : 0}`, 'OK'];
      case 'AT+CFUN?':
        return [`+CFUN: ${this.cfun}`, 'OK'];
      case 'AT+CFUN=0':
      case 'AT+CFUN=4':
        // detach: bearer and the host's call are gone; answered after up to seconds (docs/ec25.md §7, §10)
        this.cfun = Number(upper.slice(-1));
        this.sync();
        return { lines: ['OK'], delayMs: this.draw('cfunMs') };
      case 'AT+CFUN=1':
        if (this.cfun !== 1) {
          this.cfun = 1;
          this.startAttach(this.now());
        }
        return ['OK'];
      case 'AT+CFUN=1,1':
        return 'reset';
      default:
        return this.parameterised(upper, cmd);
    }
  }

  /** ECM (1) or RNDIS (3): the modem's own NAT and DHCP, dialled with AT+QNETDEVCTL (docs/ec25.md §2b). */
  private ecmMode(): boolean {
    return this.usbnet === 1 || this.usbnet === 3;
  }

  /**
   * `AT$QCRMCALL=1,1`: the host's RmNet call, QMI mode only (docs/ec25.md §2b):
   * `$QCRMCALL: 1,V4` + OK after the call set-up time.
   */
  private rmnetCall(): string[] | { lines: string[]; delayMs: number } {
    if (this.usbnet !== 0 || !this.attached || this.faults.dataCallRefused) return ['ERROR'];
    if (this.faults.callSilentlyFails) return ['OK'];
    if (this.hostCall) return ['$QCRMCALL: 1,V4', 'OK'];
    const delayMs = this.draw('callMs');
    this.callUpAt = this.now() + delayMs;
    return { lines: ['$QCRMCALL: 1,V4', 'OK'], delayMs };
  }

  private parameterised(upper: string, cmd: string): string[] {
    let m = /^AT\+CMEE=([012])$/.exec(upper);
    if (m) {
      this.cmee = Number(m[1]);
      return ['OK'];
    }
    m = /^AT\+(CREG|CGREG|CEREG)=([012])$/.exec(upper);
    if (m) {
      const d = (m[1] ?? '').toLowerCase() as Domain;
      this.regMode[d] = Number(m[2]);
      return ['OK'];
    }
    m = /^AT\+CGEREP=([012])(?:,([01]))?$/.exec(upper);
    if (m) {
      this.cgerep = Number(m[1]);
      return ['OK'];
    }
    m = /^AT\+QCFG="USBNET",([0-3])$/.exec(upper);
    if (m) {
      // kept in NV, in effect after the next reset or power cycle
      this.usbnetPending = Number(m[1]) as UsbNet;
      return ['OK'];
    }
    m = /^AT\+QNETDEVCTL=([01]),1(?:,([01]))?$/.exec(upper);
    if (m) {
      if (!this.ecmMode()) return ['ERROR'];
      if (m[1] === '0') {
        this.callUpAt = null;
        return ['OK'];
      }
      if (!this.attached || this.faults.dataCallRefused) return ['ERROR'];
      this.callUpAt ??= this.now();
      return ['OK'];
    }
    const apn = /^AT\+CGDCONT=1,"IP","([A-Za-z0-9.-]{1,62})"$/i.exec(cmd);
    if (apn) {
      this.apn = apn[1] ?? this.apn;
      return ['OK'];
    }
    return ['ERROR'];
  }
}
