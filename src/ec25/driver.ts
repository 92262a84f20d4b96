import { AtCommandError, type AtChannel, type AtResponse } from '../at/types.js';
import { ModemfleetError } from '../util/errors.js';
import {
  SIM_MISSING_CME,
  parseAti,
  parseCfun,
  parseCgpaddr,
  parseCops,
  parseCpin,
  parseCreg,
  parseCsq,
  parseIccid,
  parseImei,
  parseImsi,
  parseQcsq,
  parseQnetdevctl,
  parseServingCell,
  type Identity,
  type Operator,
  type RegistrationStat,
  type ServingCell,
  type Signal,
  type SimState,
} from './parsers.js';

/** Per-command timeouts (reference: queries 300 ms-5 s, AT+CFUN 15 s, AT+COPS 180 s). */
export const AT_TIMEOUTS = {
  probe: 3_000,
  query: 5_000,
  cfun: 15_000,
  cops: 180_000,
  dataCall: 30_000,
};

export type AtTimeouts = typeof AT_TIMEOUTS;

export interface FullIdentity extends Identity {
  imei: string;
}

const APN = /^[A-Za-z0-9][A-Za-z0-9.-]{0,61}$/;

/** Typed EC25 commands over any AT channel. Every unexpected answer is an Ec25AnswerError. */
export class Ec25Driver {
  private readonly timeouts: AtTimeouts;

  constructor(
    private readonly at: AtChannel,
    timeouts: Partial<AtTimeouts> = {},
  ) {
    this.timeouts = { ...AT_TIMEOUTS, ...timeouts };
  }

  private send(command: string, timeoutMs: number = this.timeouts.query): Promise<AtResponse> {
    return this.at.send(command, { timeoutMs });
  }

  /** The port answers at all. */
  async probe(timeoutMs: number = this.timeouts.probe): Promise<void> {
    await this.send('AT', timeoutMs);
  }

  /** Echo off, numeric CME errors, registration URCs on. */
  async configure(): Promise<void> {
    await this.send('ATE0');
    await this.send('AT+CMEE=1');
    await this.send('AT+CREG=1');
  }

  async identity(): Promise<FullIdentity> {
    const ati = parseAti((await this.send('ATI')).lines);
    const imei = parseImei((await this.send('AT+CGSN')).lines);
    return { ...ati, imei };
  }

  async iccid(): Promise<string> {
    return parseIccid((await this.send('AT+QCCID')).lines);
  }

  async imsi(): Promise<string> {
    return parseImsi((await this.send('AT+CIMI')).lines);
  }

  async simState(): Promise<SimState> {
    try {
      return parseCpin((await this.send('AT+CPIN?')).lines);
    } catch (err) {
      const cme = err instanceof AtCommandError ? err.cme : undefined;
      if (cme !== undefined && SIM_MISSING_CME.has(cme)) return 'missing';
      if (cme === 11) return 'pin';
      if (cme === 12) return 'puk';
      if (cme === 14) return 'not_ready';
      throw err;
    }
  }

  async registration(): Promise<RegistrationStat> {
    return parseCreg((await this.send('AT+CREG?')).lines);
  }

  async operator(): Promise<Operator> {
    return parseCops((await this.send('AT+COPS?', this.timeouts.cops)).lines);
  }

  /** AT+QCSQ, falling back to AT+CSQ on firmware without it. */
  async signal(): Promise<Signal> {
    try {
      return parseQcsq((await this.send('AT+QCSQ')).lines);
    } catch (err) {
      if (!(err instanceof AtCommandError)) throw err;
      return parseCsq((await this.send('AT+CSQ')).lines);
    }
  }

  async servingCell(): Promise<ServingCell> {
    return parseServingCell((await this.send('AT+QENG="servingcell"')).lines);
  }

  async setApn(apn: string): Promise<void> {
    if (!APN.test(apn)) throw new ModemfleetError('invalid_apn', `invalid APN '${apn.slice(0, 64)}'`);
    await this.send(`AT+CGDCONT=1,"IP","${apn}"`);
  }

  async startDataCall(): Promise<void> {
    await this.send('AT+QNETDEVCTL=1,1,1', this.timeouts.dataCall);
  }

  async stopDataCall(): Promise<void> {
    await this.send('AT+QNETDEVCTL=0,1,0', this.timeouts.dataCall);
  }

  async dataCallState(): Promise<{ connected: boolean }> {
    return parseQnetdevctl((await this.send('AT+QNETDEVCTL?')).lines);
  }

  /** The PDP address, or null when there is none. */
  async address(): Promise<string | null> {
    return parseCgpaddr((await this.send('AT+CGPADDR=1')).lines);
  }

  async functionality(): Promise<number> {
    return parseCfun((await this.send('AT+CFUN?')).lines);
  }

  /** 0 minimum (detach), 1 full, 4 airplane (operator-disabled). */
  async setFunctionality(fun: 0 | 1 | 4): Promise<void> {
    await this.send(`AT+CFUN=${fun}`, this.timeouts.cfun);
  }

  /** Full reset: the modem answers OK, then USB disconnects, re-enumerates and sends RDY. */
  async reset(): Promise<void> {
    await this.send('AT+CFUN=1,1', this.timeouts.cfun);
  }
}
