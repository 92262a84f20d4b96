import { fromPromise } from 'xstate';
import type {
  ModemEvent,
  ModemIdentity,
  RegistrationStat,
  SignalSample,
  SimState,
} from '../../machines/modemTypes.js';
import { AtTransport, type AtTransportOptions } from '../at/atTransport.js';
import { AtCommandError, AtError } from '../at/types.js';
import { Ec25Driver, type AtTimeouts } from '../ec25/driver.js';
import {
  dataRegistration,
  parseCgev,
  parseRegistrationUrc,
  type ContextSettings,
  type Registrations,
} from '../ec25/parsers.js';
import type { WwanControl } from '../net/wwan.js';
import { usbReset } from '../detect/usbReset.js';
import { powerCommandFor } from './power.js';
import { silentLogger, type Logger } from '../log.js';
import { run } from '../process/run.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { watchPresence } from '../util/presence.js';
import { sleep } from '../util/time.js';

export interface ModemLinkOptions {
  /** The AT tty detection prefers (the `option` interface the model names), e.g. /dev/ttyUSB2. */
  atPort: string;
  /**
   * Every tty of the device on an `option` interface, preferred first: when the preferred one does
   * not answer, the others are probed (the composition moves with `usbnet`/`usbcfg`).
   */
  atCandidates?: readonly string[] | undefined;
  /** The USB location (`1-1.3`): fills the power command's `{hub}`, `{port}`, `{usbPath}`. */
  usbPath?: string | undefined;
  /** The USB device's sysfs directory, for the USB-level reset (`authorized` 0 → 1). */
  sysPath?: string | undefined;
  /** The APN, put in place before the modem attaches; none keeps the modem's own. */
  apn?: string | undefined;
  /**
   * APNs by operator: the IMSI's MCC+MNC (5 or 6 digits, e.g. `26202`) → APN; the longest match
   * wins, `apn` is the default.
   */
  apnByOperator?: Readonly<Record<string, string>> | undefined;
  /** The modem's net interface now (detection re-resolves it after a rename or a late bind). */
  netIface?: (() => string | undefined) | undefined;
  /**
   * The host side of the qmi_wwan link (raw-IP, link state, MTU); unset: the link is not managed
   * (the demo's loopback addresses).
   */
  wwan?: WwanControl | undefined;
  /** MTU put on the link when the modem does not report one (default 1500). */
  mtu?: number | undefined;
  /** A modem found in another `usbnet` mode is switched to QMI (and reset) instead of failing. */
  switchUsbnet?: boolean | undefined;
  /**
   * argv template of the USB power-cycle command (the last rung of the recovery ladder), e.g.
   * `uhubctl -l {hub} -p {port} -a cycle`: filled per modem (src/fleet/power.ts).
   */
  powerCycleCommand?: readonly string[] | undefined;
  powerCycleTimeoutMs?: number;
  /** How often the tty is checked for presence (removal and re-enumeration). */
  presencePollMs?: number;
  /** Consecutive AT timeouts after which the port counts as lost (ModemManager: 10). */
  maxConsecutiveTimeouts?: number;
  /** Per-command AT timeouts (defaults from the reference: AT_TIMEOUTS). */
  timeouts?: Partial<AtTimeouts>;
  /** The data call gets its address: polled this many times, this far apart. */
  addressPolls?: number;
  addressPollMs?: number;
  /** Opens the AT port (default: serialport); the in-process simulator provides its own. */
  openPort?: AtTransportOptions['openPort'];
  log?: Logger;
}

/**
 * The I/O side of one modem: its AT port (opened, re-opened after a reset, closed on loss), the
 * EC25 driver, and the effects the modem machine names, as xstate actors. URCs and port events come
 * back as machine events through `onEvent`: `RDY` → urc.rdy, `+CREG:` → urc.registration, the tty
 * vanishing → device.removed (and device.added when it comes back), the transport giving up →
 * port.lost.
 */
export class ModemLink {
  private transport: AtTransport | undefined;
  private opening: Promise<Ec25Driver> | undefined;
  private driver: Ec25Driver | undefined;
  private unwatch: (() => void) | undefined;
  private present = true;
  private stopped = false;
  /** The AT port in use: the preferred one, or the candidate that answered. */
  private port: string;
  /** The IMEI read on this port: every re-open checks that the same modem answers. */
  private imei: string | null = null;
  private imsi: string | null = null;
  private usbnetSwitched = false;
  /** The last registration of each domain (queries and URCs), and the data registration reported. */
  private registrations: Registrations = { cs: null, ps: null, eps: null };
  private reported: RegistrationStat | null = null;
  private readonly log: Logger;
  private sink: (event: ModemEvent) => void = () => undefined;

  constructor(private readonly options: ModemLinkOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'link', port: options.atPort });
    this.port = options.atPort;
  }

  /** Where machine events go (the actor's send); set before start. */
  onEvent(sink: (event: ModemEvent) => void): void {
    this.sink = sink;
  }

  start(): void {
    this.stopped = false;
    this.unwatch = watchPresence(
      this.options.atPort,
      this.options.presencePollMs ?? 500,
      (exists) => void this.onPresence(exists),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.unwatch?.();
    this.unwatch = undefined;
    const transport = this.transport;
    this.transport = undefined;
    this.driver = undefined;
    await transport?.stop();
  }

  private emit(event: ModemEvent): void {
    if (this.stopped) return;
    this.log.debug({ event: event.type }, 'modem event');
    this.sink(event);
  }

  private async onPresence(exists: boolean): Promise<void> {
    if (this.stopped || exists === this.present) return;
    this.present = exists;
    if (!exists) {
      this.log.info('AT port disappeared');
      await this.closeTransport();
      this.emit({ type: 'device.removed' });
    } else {
      this.log.info('AT port is back');
      this.emit({ type: 'device.added' });
    }
  }

  private async closeTransport(): Promise<void> {
    const transport = this.transport;
    this.transport = undefined;
    this.driver = undefined;
    await transport?.stop();
  }

  /** The driver over an open port; opens the port when it is closed. */
  private open(): Promise<Ec25Driver> {
    if (this.stopped) return Promise.reject(new AtError('port_lost', '', 'the modem link is stopped'));
    if (this.driver && this.transport && !this.transport.closed) return Promise.resolve(this.driver);
    this.opening ??= this.openPort().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
  }

  private async openPort(): Promise<Ec25Driver> {
    await this.closeTransport();
    const transport: AtTransport = new AtTransport({
      path: this.port,
      log: this.log,
      presencePollMs: this.options.presencePollMs ?? 500,
      maxConsecutiveTimeouts: this.options.maxConsecutiveTimeouts ?? 10,
      ...(this.options.openPort ? { openPort: this.options.openPort } : {}),
      onUrc: (urc) => this.onUrc(urc.line),
      onClose: (reason) => {
        if (this.transport !== transport) return; // closed by us
        this.transport = undefined;
        this.driver = undefined;
        // the tty is gone: the device left (the presence check may miss a short gap); still
        // there: the port gave up (timeouts, errors) or the device was replaced in a flash
        void pathExists(this.port).then((exists) => {
          if (exists) return this.emit({ type: 'port.lost', detail: reason.message });
          if (!this.present) return;
          this.present = false;
          this.emit({ type: 'device.removed' });
        });
      },
    });
    await transport.start();
    if (this.stopped) {
      await transport.stop();
      throw new AtError('port_lost', '', 'the modem link is stopped');
    }
    this.transport = transport;
    this.driver = new Ec25Driver(transport, this.options.timeouts);
    return this.driver;
  }

  private onUrc(line: string): void {
    if (line === 'RDY') return this.emit({ type: 'urc.rdy' });
    const registration = parseRegistrationUrc(line);
    if (registration) {
      this.registrations = { ...this.registrations, [registration.domain]: registration.stat };
      // what counts is registration for data (EPS or PS): a circuit-switched change alone is not
      // news (data-only SIMs are never CS-registered)
      const stat = dataRegistration(this.registrations);
      if (registration.domain !== 'cs' && stat !== this.reported) {
        this.reported = stat;
        this.emit({ type: 'urc.registration', stat });
      }
      return;
    }
    const cgev = parseCgev(line);
    if (cgev) this.emit({ type: 'call.lost', detail: `+CGEV: ${cgev}` });
  }

  // --- effects ---------------------------------------------------------------------------------

  /**
   * The port answers and is configured. A re-opened port must still be the same modem: after a
   * re-enumeration tty numbers can move to another modem, which is never taken for this one.
   */
  async probe(): Promise<void> {
    try {
      await this.probeOn();
    } catch (err) {
      const others = (this.options.atCandidates ?? []).filter((p) => p !== this.port);
      if (others.length === 0 || !(err instanceof AtError) || err.code !== 'at_timeout') throw err;
      const tried = this.port;
      for (const port of others) {
        await this.closeTransport();
        this.port = port;
        try {
          await this.probeOn();
          this.log.warn(
            { tried, answering: port },
            'the preferred AT port is silent: using another option tty',
          );
          return;
        } catch {
          // the next candidate
        }
      }
      await this.closeTransport();
      this.port = tried;
      throw err;
    }
  }

  private async probeOn(): Promise<void> {
    const driver = await this.open();
    await driver.probe();
    await driver.configure();
    if (this.imei === null) return;
    const imei = await driver.imei();
    if (imei !== this.imei) {
      await this.closeTransport();
      throw new ModemfleetError(
        'port_lost',
        `${this.port} now answers as IMEI ${imei}, not ${this.imei}: another modem's port`,
      );
    }
  }

  async readIdentity(): Promise<ModemIdentity> {
    const driver = await this.open();
    const id = await driver.identity();
    this.imei = id.imei;
    const usbnet = await this.usbnet(driver);
    // without a SIM the modem answers +CME ERROR for both: the SIM check names the problem
    const iccid = await driver.iccid().catch(nullOnAtError);
    const imsi = await driver.imsi().catch(nullOnAtError);
    this.imsi = imsi;
    return { ...id, iccid, imsi, usbnet };
  }

  /**
   * The data path is QMI/RmNet (`AT+QCFG="usbnet"` 0, the EC25's default): in ECM/RNDIS/MBIM the
   * host's interface is another driver's and `AT$QCRMCALL` does not apply. Another mode is reported
   * (the machine goes to `error`, `usbnet_mode`), or switched back once when the config allows:
   * the change needs a reset.
   */
  private async usbnet(driver: Ec25Driver): Promise<number | null> {
    const mode = await driver.usbnet().catch(nullOnAtError); // firmware without the setting: QMI
    if (mode === null || mode === 0 || !this.options.switchUsbnet || this.usbnetSwitched) return mode;
    this.usbnetSwitched = true;
    this.log.warn({ usbnet: mode }, 'modem not in usbnet mode 0 (QMI): switching it and resetting it');
    await driver.setUsbnet(0);
    await this.hardReset();
    throw new ModemfleetError('usbnet_switching', `usbnet ${mode} switched to 0 (QMI); resetting`);
  }

  /** The APN for this SIM: by its operator (longest MCC+MNC prefix of the IMSI), else the default. */
  apnFor(imsi: string | null): string | undefined {
    const map = this.options.apnByOperator ?? {};
    if (imsi)
      for (const len of [6, 5]) {
        const apn = map[imsi.slice(0, len)];
        if (apn) return apn;
      }
    return this.options.apn;
  }

  /**
   * The APN is in place before the modem attaches: the attach uses context 1's APN, so a wrong one
   * is changed with the radio off (CFUN=4 keeps the SIM readable), then the radio goes back on.
   */
  private async ensureApn(driver: Ec25Driver): Promise<void> {
    const wanted = this.apnFor(this.imsi);
    if (!wanted) return;
    const current = await driver.apn().catch(nullOnAtError);
    if (current === wanted) return;
    this.log.info({ apn: wanted, was: current }, 'setting the APN before the attach');
    await driver.setFunctionality(4);
    await driver.setApn(wanted);
    await driver.setFunctionality(1);
  }

  /**
   * The SIM, with the radio on: the machine asks only when the modem is wanted enabled, and a radio
   * left off — CFUN=0 by a supervisor killed in the middle of a rotation, CFUN=4 by a disable whose
   * enable came while we were down — would never register.
   */
  async checkSim(): Promise<SimState> {
    const driver = await this.open();
    if ((await driver.functionality()) !== 1) {
      this.log.warn('radio found off while the modem is wanted on: switching it on (AT+CFUN=1)');
      await driver.setFunctionality(1);
    }
    const sim = await driver.simState();
    if (sim === 'ready') {
      this.imsi ??= await driver.imsi().catch(nullOnAtError);
      await this.ensureApn(driver);
    }
    return sim;
  }

  /**
   * Registration for data: `+CEREG` (LTE) or `+CGREG` registered, whatever `+CREG` says (data-only
   * SIMs and EPS-only attach are never CS-registered).
   */
  async queryRegistration(): Promise<{ stat: RegistrationStat; operator: string | null }> {
    const driver = await this.open();
    this.registrations = await driver.registrations();
    const stat = dataRegistration(this.registrations);
    this.reported = stat;
    if (stat !== 'home' && stat !== 'roaming') return { stat, operator: null };
    return { stat, operator: (await driver.operator()).name };
  }

  /** The data call (boot and rotation). */
  async connect(): Promise<ContextSettings> {
    return this.dial(await this.open());
  }

  /** The call went down while attached: stop what is left of it, then dial again. */
  async redial(): Promise<ContextSettings> {
    const driver = await this.open();
    await driver.stopDataCall().catch(nullOnAtError);
    return this.dial(driver);
  }

  /**
   * The QMI-mode data path, in the order the kernel and the modem need (docs/ec25.md, data call):
   * link down → `raw_ip` Y (refused while up; the EC25 sends raw IP) → `AT$QCRMCALL=1,1` →
   * address, mask, gateway, DNS from `AT+CGCONTRDP=1` → MTU → link up. `+CGPADDR` alone proves
   * nothing (the bearer has an address as soon as the modem is attached). A call already up on a
   * link already up in raw-IP mode (a previous run's, handed over) is kept: only its settings are
   * read.
   */
  private async dial(driver: Ec25Driver): Promise<ContextSettings> {
    const wwan = this.options.wwan;
    const iface = this.options.netIface?.();
    const callUp = await driver.dataCallUp();
    if (callUp && (await this.linkReady(wwan, iface))) {
      // a supervisor restart: the call a previous run dialled is up and the link carries it; taking
      // the link down would flush its routes and stall the customers' open connections
      this.log.info({ iface: iface ?? null }, 'the data call is up and its link ready: kept as it is');
      return this.settings(driver);
    }
    if (wwan) {
      if (!iface)
        throw new ModemfleetError('data_call_failed', 'no net interface (qmi_wwan) found for this modem yet');
      await wwan.setLink(iface, false);
      await this.rawIpOn(wwan, iface);
    }
    if (!callUp) {
      try {
        await driver.startDataCall();
      } catch (err) {
        if (!(err instanceof AtCommandError)) throw err;
        throw new ModemfleetError('data_call_failed', `the modem refused the data call: ${err.message}`);
      }
      if (!(await driver.dataCallUp()))
        throw new ModemfleetError(
          'no_data_call',
          'AT$QCRMCALL=1,1 was answered but no call is up (AT$QCRMCALL? lists none)',
        );
    }
    const settings = await this.settings(driver);
    if (wwan && iface) {
      await wwan.setMtu(iface, settings.mtu ?? this.options.mtu ?? 1500);
      await wwan.setLink(iface, true);
    }
    return settings;
  }

  /**
   * With the host's call up (`AT$QCRMCALL?` lists it, as on a real EC25 after the supervisor
   * restarted: closing the tty ends no call), the link is ready when it is unmanaged, or up in
   * raw-IP mode: nothing of the dial is left to do. A call up on a link that is down or not raw-IP
   * is dialled through as usual (the link set up again, the call kept).
   */
  private async linkReady(wwan: WwanControl | undefined, iface: string | undefined): Promise<boolean> {
    if (!wwan) return true;
    if (!iface) return false;
    return (await wwan.rawIp(iface)) === true && (await wwan.linkUp(iface));
  }

  private async rawIpOn(wwan: WwanControl, iface: string): Promise<void> {
    const current = await wwan.rawIp(iface);
    if (current === null)
      throw new ModemfleetError(
        'raw_ip_off',
        `${iface} has no qmi/raw_ip: not a qmi_wwan link, or a kernel before 4.5; the EC25 sends raw IP`,
      );
    if (current) return;
    try {
      await wwan.setRawIp(iface, true);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'raw_ip_unsupported' || code === 'link_busy')
        throw new ModemfleetError('raw_ip_off', `${iface}: ${coerceError(err).message}`);
      throw err;
    }
    if ((await wwan.rawIp(iface)) !== true)
      throw new ModemfleetError(
        'raw_ip_off',
        `${iface}: raw_ip stays N after writing Y; the link would carry nothing`,
      );
  }

  /** The call's settings, polled until the address is there; `+CGPADDR` where CGCONTRDP is missing. */
  private async settings(driver: Ec25Driver): Promise<ContextSettings> {
    const polls = this.options.addressPolls ?? 10;
    for (let i = 0; i < polls; i++) {
      let settings: ContextSettings | null;
      try {
        settings = await driver.contextSettings();
      } catch (err) {
        if (!(err instanceof AtCommandError)) throw err;
        const address = await driver.address();
        settings = address ? { address, prefix: 32, gateway: null, dns: [], mtu: null } : null;
      }
      if (settings) return settings;
      await sleep(this.options.addressPollMs ?? 300);
    }
    throw new ModemfleetError('data_call_failed', 'the data call is up but has no address');
  }

  /** Signal, and whether the host's call is still up (a call can end without a `+CGEV`). */
  async pollSignal(): Promise<{ signal: SignalSample; callUp: boolean }> {
    const driver = await this.open();
    const signal = await driver.signal();
    return { signal, callUp: await driver.dataCallUp() };
  }

  /** Rotation, step 1: the call ends, the radio goes off (the network releases the address). */
  async detach(): Promise<void> {
    const driver = await this.open();
    await driver.stopDataCall().catch(nullOnAtError);
    await driver.setFunctionality(0);
  }

  async attach(): Promise<void> {
    await (await this.open()).setFunctionality(1);
  }

  async softReset(): Promise<void> {
    const driver = await this.open();
    await driver.setFunctionality(0);
    await driver.setFunctionality(1);
  }

  /** AT+CFUN=1,1: OK, then the port goes away; the next probe re-opens it. */
  async hardReset(): Promise<void> {
    const driver = await this.open();
    try {
      await driver.reset();
    } finally {
      await this.closeTransport();
    }
  }

  /** The USB-level reset: the device is de-authorized and authorized again (re-enumerates, keeps power). */
  async usbReset(): Promise<void> {
    if (!this.options.sysPath)
      throw new ModemfleetError('usb_reset_failed', 'the USB device of this modem is not known');
    await this.closeTransport();
    await usbReset(this.options.sysPath, { pauseMs: 500 });
  }

  async powerCycle(): Promise<void> {
    const template = this.options.powerCycleCommand;
    if (!template?.length || !this.options.usbPath)
      throw new ModemfleetError('no_power_cycle', 'no USB power-cycle command is configured');
    const [file, ...args] = powerCommandFor(template, {
      usbPath: this.options.usbPath,
      imei: this.imei ?? undefined,
    });
    if (!file) throw new ModemfleetError('no_power_cycle', 'no USB power-cycle command is configured');
    await this.closeTransport();
    const result = await run(file, args, { timeoutMs: this.options.powerCycleTimeoutMs ?? 30_000 });
    if (result.exitCode !== 0)
      throw new ModemfleetError(
        'power_cycle_failed',
        `${file} exited with ${result.exitCode ?? result.signal ?? 'an error'}: ${String(result.stderr).slice(0, 200)}`,
      );
  }

  /** Operator-disabled: the call ends, airplane mode (CFUN=4). */
  async disableRadio(): Promise<void> {
    const driver = await this.open();
    await driver.stopDataCall().catch(nullOnAtError);
    await driver.setFunctionality(4);
  }

  /** The effects as xstate actors, for `modemMachine.provide({ actors })`. */
  actors() {
    return {
      probe: fromPromise(() => this.probe()),
      readIdentity: fromPromise(() => this.readIdentity()),
      checkSim: fromPromise(() => this.checkSim()),
      queryRegistration: fromPromise(() => this.queryRegistration()),
      connect: fromPromise<{ address: string }>(() => this.connect()),
      redial: fromPromise<{ address: string }>(() => this.redial()),
      pollSignal: fromPromise(() => this.pollSignal()),
      detach: fromPromise(() => this.detach()),
      attach: fromPromise(() => this.attach()),
      softReset: fromPromise(() => this.softReset()),
      hardReset: fromPromise(() => this.hardReset()),
      usbReset: fromPromise(() => this.usbReset()),
      powerCycle: fromPromise(() => this.powerCycle()),
      disableRadio: fromPromise(() => this.disableRadio()),
    };
  }
}

function nullOnAtError(err: unknown): null {
  if (err instanceof AtCommandError) return null;
  throw coerceError(err);
}
