/**
 * One simulated Quectel EC25: its state and its answers, in the exact formats of
 * shared/reference/ec25.md. Pure: time comes from `now()`, chance from `random()`; the PTY host
 * turns answers into bytes on a real tty.
 */
export type Registration = 'ok' | 'denied' | 'searching';

export interface SimFaults {
  /** AT+CPIN? / AT+CIMI → +CME ERROR: 10. */
  noSim: boolean;
  /** +CPIN: SIM PIN. */
  pinLocked: boolean;
  registration: Registration;
  /** AT+QNETDEVCTL=1,1,1 → ERROR. */
  dataCallRefused: boolean;
  /** Stops answering entirely (bytes are swallowed). */
  hang: boolean;
  /** Extra latency per answer, ms. */
  slowMs: number;
  /** Probability of garbage bytes before an answer. */
  garbage: number;
  /** Probability that a new data call gets the previous address back. */
  sameAddress: number;
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
  timings: { bootMs: number; latencyMs: number; attachMs: number; resetMs: number };
  faults: SimFaults;
  /**
   * Data-call addresses come from this /24 (`"100.65.3"` → 100.65.3.10-250), as the lab's carrier
   * link of this modem routes them; unset: anywhere in 10.64.0.0/10.
   */
  subnet?: string | undefined;
}

export const NO_FAULTS: SimFaults = {
  noSim: false,
  pinLocked: false,
  registration: 'ok',
  dataCallRefused: false,
  hang: false,
  slowMs: 0,
  garbage: 0,
  sameAddress: 0,
};

export const BOOT_URCS = ['RDY', '+CPIN: READY', '+QUSIM: 1', '+QIND: SMS DONE', '+QIND: PB DONE'];

export interface Answer {
  /** Raw bytes to write (echo, framed lines), or nothing (hang). */
  text: string;
  delayMs: number;
  /** The command asked for a reset: the port goes away and comes back. */
  reset?: boolean;
}

const frame = (lines: readonly string[]): string => lines.map((l) => `\r\n${l}\r\n`).join('');

export class Ec25Model {
  echo = true;
  cmee = 0;
  cfun = 1;
  cregMode = 0;
  ceregMode = 0;
  apn = 'internet';
  dataCall = false;
  address: string | null = null;
  private attachedAt: number;
  private rssi: number;
  private lastAddress: string | null = null;

  constructor(
    readonly profile: SimProfile,
    private readonly now: () => number = Date.now,
    private readonly random: () => number = Math.random,
  ) {
    this.attachedAt = now();
    this.rssi = profile.rssi;
  }

  get faults(): SimFaults {
    return this.profile.faults;
  }

  /** Back to power-on state (after AT+CFUN=1,1 or a replug). */
  powerOn(): void {
    this.echo = true;
    this.cmee = 0;
    this.cfun = 1;
    this.cregMode = 0;
    this.ceregMode = 0;
    this.dataCall = false;
    this.address = null;
    this.attachedAt = this.now();
  }

  bootText(): string {
    return frame(this.faults.noSim ? BOOT_URCS.filter((u) => u === 'RDY') : BOOT_URCS);
  }

  /** 1 home, 2 searching, 3 denied: what the network says right now. */
  registrationStat(): number {
    if (this.cfun !== 1 || this.faults.noSim || this.faults.pinLocked) return 0;
    if (this.faults.registration === 'denied') return 3;
    if (this.faults.registration === 'searching') return 2;
    return this.now() - this.attachedAt >= this.profile.timings.attachMs ? 1 : 2;
  }

  private drift(): number {
    this.rssi = Math.max(3, Math.min(31, this.rssi + Math.round((this.random() - 0.5) * 2)));
    return this.rssi;
  }

  private simError(): string[] | undefined {
    if (this.faults.noSim) return ['+CME ERROR: 10'];
    if (this.faults.pinLocked) return ['+CME ERROR: 11'];
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

  handle(command: string): Answer {
    const echo = this.echo ? `${command}\r` : '';
    if (this.faults.hang) return { text: '', delayMs: 0 };
    const lines = this.answer(command.trim());
    const garbage = this.random() < this.faults.garbage ? '\x00\xff#@!\x07' : '';
    const delayMs = this.profile.timings.latencyMs + this.faults.slowMs;
    if (lines === 'reset') return { text: echo + frame(['OK']), delayMs, reset: true };
    return { text: echo + garbage + frame(lines), delayMs };
  }

  private answer(cmd: string): string[] | 'reset' {
    const upper = cmd.toUpperCase();
    const registered = (): boolean => [1, 5].includes(this.registrationStat());
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
      case 'AT+QCCID':
        return this.faults.noSim ? ['+CME ERROR: 10'] : [`+QCCID: ${this.profile.iccid}F`, 'OK'];
      case 'AT+CIMI':
        return this.simError() ?? [this.profile.imsi, 'OK'];
      case 'AT+CPIN?':
        if (this.faults.noSim) return ['+CME ERROR: 10'];
        return [this.faults.pinLocked ? '+CPIN: SIM PIN' : '+CPIN: READY', 'OK'];
      case 'AT+CSQ':
        return [`+CSQ: ${this.cfun === 1 ? this.drift() : 99},99`, 'OK'];
      case 'AT+QCSQ': {
        if (!registered()) return ['+QCSQ: "NOSERVICE"', 'OK'];
        const rssi = 2 * this.drift() - 113;
        return [`+QCSQ: "LTE",${rssi},${rssi - 30},${Math.round(this.rssi / 2)},-9`, 'OK'];
      }
      case 'AT+COPS?':
        return [registered() ? `+COPS: 0,0,"${this.profile.operator}",7` : '+COPS: 0', 'OK'];
      case 'AT+CREG?':
        return [`+CREG: ${this.cregMode},${this.registrationStat()}`, 'OK'];
      case 'AT+CEREG?':
        return [`+CEREG: ${this.ceregMode},${this.registrationStat()}`, 'OK'];
      case 'AT+QENG="SERVINGCELL"': {
        if (!registered()) return ['+QENG: "servingcell","SEARCH"', 'OK'];
        const rssi = 2 * this.rssi - 113;
        const mnc = String(this.profile.mnc).padStart(2, '0');
        return [
          `+QENG: "servingcell","NOCONN","LTE","FDD",${this.profile.mcc},${mnc},7676A09,188,6300,20,3,3,603,${rssi - 30},-9,${rssi},11,23`,
          'OK',
        ];
      }
      case 'AT+CGDCONT?':
        return [`+CGDCONT: 1,"IP","${this.apn}","0.0.0.0",0,0,0,0`, 'OK'];
      case 'AT+QNETDEVCTL?':
        return [`+QNETDEVCTL: ${this.dataCall ? 1 : 0},1,1,${this.dataCall ? 1 : 0}`, 'OK'];
      case 'AT+QNETDEVCTL=1,1,1':
        if (this.faults.dataCallRefused || !registered()) return ['ERROR'];
        if (!this.dataCall) {
          this.address = this.newAddress();
          this.lastAddress = this.address;
        }
        this.dataCall = true;
        return ['OK'];
      case 'AT+QNETDEVCTL=0,1,0':
        this.dataCall = false;
        this.address = null;
        return ['OK'];
      case 'AT+CGPADDR=1':
        return [`+CGPADDR: 1,"${this.dataCall && this.address ? this.address : '0.0.0.0'}"`, 'OK'];
      case 'AT+CFUN?':
        return [`+CFUN: ${this.cfun}`, 'OK'];
      case 'AT+CFUN=0':
      case 'AT+CFUN=4':
        this.cfun = Number(upper.slice(-1));
        this.dataCall = false;
        this.address = null;
        return ['OK'];
      case 'AT+CFUN=1':
        if (this.cfun !== 1) this.attachedAt = this.now();
        this.cfun = 1;
        return ['OK'];
      case 'AT+CFUN=1,1':
        return 'reset';
      default:
        return this.parameterised(upper, cmd);
    }
  }

  private parameterised(upper: string, cmd: string): string[] {
    let m = /^AT\+CMEE=([012])$/.exec(upper);
    if (m) {
      this.cmee = Number(m[1]);
      return ['OK'];
    }
    m = /^AT\+C(E?)REG=([012])$/.exec(upper);
    if (m) {
      if (m[1]) this.ceregMode = Number(m[2]);
      else this.cregMode = Number(m[2]);
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
