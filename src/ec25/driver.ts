import { AtCommandError, type AtChannel, type AtResponse } from '../at/types.js';
import { ModemfleetError } from '../util/errors.js';
import {
  DOMAIN_COMMAND,
  SIM_MISSING_CME,
  SIM_TRANSIENT_CME,
  parseAti,
  parseCfun,
  parseCgcontrdp,
  parseCgdcont,
  parseCgpaddr,
  parseCops,
  parseCpin,
  parseCreg,
  parseCsq,
  parseIccid,
  parseImei,
  parseImsi,
  parseQcrmcall,
  parseQcsq,
  parseServingCell,
  parseUsbnet,
  type ContextSettings,
  type Identity,
  type Operator,
  type RegistrationDomain,
  type Registrations,
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

  /**
   * Echo off, numeric CME errors, registration URCs of all three domains with location (mode 2),
   * and packet-domain event URCs (`+CGEV`, mode 2: buffered while the link is reserved).
   */
  async configure(): Promise<void> {
    await this.send('ATE0');
    await this.send('AT+CMEE=1');
    for (const domain of ['cs', 'ps', 'eps'] as const) await this.send(`AT+${DOMAIN_COMMAND[domain]}=2`);
    await this.send('AT+CGEREP=2,1');
  }

  /** The IMEI alone (`AT+CGSN`): who answers on this port. */
  async imei(): Promise<string> {
    return parseImei((await this.send('AT+CGSN')).lines);
  }

  /** `AT+QCFG="usbnet"`: 0 QMI/RmNet, 1 ECM, 2 MBIM, 3 RNDIS. */
  async usbnet(): Promise<number> {
    return parseUsbnet((await this.send('AT+QCFG="usbnet"')).lines);
  }

  /** Switches the USB network mode; it takes effect after a reset (`AT+CFUN=1,1`). */
  async setUsbnet(mode: 0 | 1 | 2 | 3): Promise<void> {
    await this.send(`AT+QCFG="usbnet",${mode}`);
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
      const transient = cme === undefined ? undefined : SIM_TRANSIENT_CME.get(cme);
      if (transient) return transient;
      throw err;
    }
  }

  /** One domain's registration; null when the modem does not support that command. */
  async registrationOf(domain: RegistrationDomain): Promise<Registrations[RegistrationDomain]> {
    const command = `AT+${DOMAIN_COMMAND[domain]}?`;
    try {
      return parseCreg((await this.send(command)).lines, command);
    } catch (err) {
      if (err instanceof AtCommandError) return null;
      throw err;
    }
  }

  /** All three domains: `+CREG` (CS), `+CGREG` (PS), `+CEREG` (EPS). */
  async registrations(): Promise<Registrations> {
    return {
      cs: await this.registrationOf('cs'),
      ps: await this.registrationOf('ps'),
      eps: await this.registrationOf('eps'),
    };
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

  /** The APN of context 1 (`AT+CGDCONT?`), or null when it is not defined. */
  async apn(): Promise<string | null> {
    const contexts = parseCgdcont((await this.send('AT+CGDCONT?')).lines);
    return contexts.find((c) => c.cid === 1)?.apn ?? null;
  }

  async setApn(apn: string): Promise<void> {
    if (!APN.test(apn)) throw new ModemfleetError('invalid_apn', `invalid APN '${apn.slice(0, 64)}'`);
    await this.send(`AT+CGDCONT=1,"IP","${apn}"`);
  }

  /**
   * Starts the RmNet (QMI-mode) data call on the AT port: `AT$QCRMCALL=1,1` (instance 1, IPv4),
   * answered `$QCRMCALL: 1,V4` and OK once the call is up.
   */
  async startDataCall(): Promise<void> {
    await this.send('AT$QCRMCALL=1,1', this.timeouts.dataCall);
  }

  async stopDataCall(): Promise<void> {
    await this.send('AT$QCRMCALL=0,1', this.timeouts.dataCall);
  }

  /** Whether the host's IPv4 RmNet call is up (`AT$QCRMCALL?`). */
  async dataCallUp(): Promise<boolean> {
    return parseQcrmcall((await this.send('AT$QCRMCALL?')).lines);
  }

  /** Address, mask, gateway, DNS (and MTU when reported) of context 1: `AT+CGCONTRDP=1`. */
  async contextSettings(): Promise<ContextSettings | null> {
    return parseCgcontrdp((await this.send('AT+CGCONTRDP=1')).lines);
  }

  /**
   * The default bearer's address (`AT+CGPADDR=1`), or null when there is none. Shown as soon as the
   * modem is attached, whether or not the host started a call: it proves nothing about the data path.
   */
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
