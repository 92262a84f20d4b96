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
import { parseCregUrc } from '../ec25/parsers.js';
import { silentLogger, type Logger } from '../log.js';
import { run } from '../process/run.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { watchPresence } from '../util/presence.js';
import { sleep } from '../util/time.js';

export interface ModemLinkOptions {
  /** The AT tty (interface 2 of an EC25), e.g. /dev/ttyUSB2. */
  atPort: string;
  /** APN set before each data call; none keeps the modem's own. */
  apn?: string | undefined;
  /** argv of the USB power-cycle command (the last rung of the recovery ladder), e.g. uhubctl. */
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
  private readonly log: Logger;
  private sink: (event: ModemEvent) => void = () => undefined;

  constructor(private readonly options: ModemLinkOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'link', port: options.atPort });
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
      path: this.options.atPort,
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
        void pathExists(this.options.atPort).then((exists) => {
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
    const stat = parseCregUrc(line);
    if (stat) this.emit({ type: 'urc.registration', stat });
  }

  // --- effects ---------------------------------------------------------------------------------

  async probe(): Promise<void> {
    const driver = await this.open();
    await driver.probe();
    await driver.configure();
  }

  async readIdentity(): Promise<ModemIdentity> {
    const driver = await this.open();
    const id = await driver.identity();
    // without a SIM the modem answers +CME ERROR for both: the SIM check names the problem
    const iccid = await driver.iccid().catch(nullOnAtError);
    const imsi = await driver.imsi().catch(nullOnAtError);
    return { ...id, iccid, imsi };
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
    return driver.simState();
  }

  async queryRegistration(): Promise<{ stat: RegistrationStat; operator: string | null }> {
    const driver = await this.open();
    const stat = await driver.registration();
    if (stat !== 'home' && stat !== 'roaming') return { stat, operator: null };
    return { stat, operator: (await driver.operator()).name };
  }

  async connect(): Promise<{ address: string }> {
    const driver = await this.open();
    if (this.options.apn) await driver.setApn(this.options.apn);
    if (!(await driver.dataCallState()).connected) await driver.startDataCall();
    const polls = this.options.addressPolls ?? 10;
    for (let i = 0; i < polls; i++) {
      const address = await driver.address();
      if (address) return { address };
      await sleep(this.options.addressPollMs ?? 300);
    }
    throw new ModemfleetError('data_call_failed', 'the data call is up but has no address');
  }

  async pollSignal(): Promise<SignalSample> {
    return (await this.open()).signal();
  }

  /** Rotation, step 1: radio off (the network releases the address). */
  async detach(): Promise<void> {
    await (await this.open()).setFunctionality(0);
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

  async powerCycle(): Promise<void> {
    const argv = this.options.powerCycleCommand;
    const [file, ...args] = argv ?? [];
    if (!file) throw new ModemfleetError('no_power_cycle', 'no USB power-cycle command is configured');
    await this.closeTransport();
    const result = await run(file, args, { timeoutMs: this.options.powerCycleTimeoutMs ?? 30_000 });
    if (result.exitCode !== 0)
      throw new ModemfleetError(
        'power_cycle_failed',
        `${file} exited with ${result.exitCode ?? result.signal ?? 'an error'}: ${String(result.stderr).slice(0, 200)}`,
      );
  }

  /** Operator-disabled: airplane mode (CFUN=4). */
  async disableRadio(): Promise<void> {
    await (await this.open()).setFunctionality(4);
  }

  /** The effects as xstate actors, for `modemMachine.provide({ actors })`. */
  actors() {
    return {
      probe: fromPromise(() => this.probe()),
      readIdentity: fromPromise(() => this.readIdentity()),
      checkSim: fromPromise(() => this.checkSim()),
      queryRegistration: fromPromise(() => this.queryRegistration()),
      connect: fromPromise(() => this.connect()),
      pollSignal: fromPromise(() => this.pollSignal()),
      detach: fromPromise(() => this.detach()),
      attach: fromPromise(() => this.attach()),
      softReset: fromPromise(() => this.softReset()),
      hardReset: fromPromise(() => this.hardReset()),
      powerCycle: fromPromise(() => this.powerCycle()),
      disableRadio: fromPromise(() => this.disableRadio()),
    };
  }
}

function nullOnAtError(err: unknown): null {
  if (err instanceof AtCommandError) return null;
  throw coerceError(err);
}
