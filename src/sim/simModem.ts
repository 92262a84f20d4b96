import { join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { sleep } from '../util/time.js';
import { Ec25Model, frame, type SimFaults, type SimProfile, type UsbNet } from './ec25Model.js';
import { MemoryWire, PtyWire, type SimWire } from './simWire.js';

export interface SimModemOptions {
  profile: SimProfile;
  /** Directory of the tty links. */
  dir: string;
  /** File name of this modem's AT port link in `dir`, e.g. `ttyUSB2`. */
  name: string;
  /** A real PTY (default) or an in-process port. */
  wire?: 'pty' | 'memory';
  log?: Logger;
  random?: () => number;
}

const MAX_INPUT = 1024;
/** How often time-driven state (attach, registration URCs, the host's call) is looked at. */
const TICK_MS = 100;

/**
 * What a simulated modem tells the lab: the host's data call came up or went down (`AT$QCRMCALL`,
 * a detach, a network-side deactivation, an unplug), the USB device appeared (plug, reset,
 * re-enumeration: the kernel's per-link settings are lost) or went away.
 */
export type SimModemEvent =
  { type: 'hostCall'; up: boolean } | { type: 'plugged'; enumerations: number } | { type: 'unplugged' };

/**
 * A simulated EC25 behind a tty path: by default a real PTY (`socat PTY,link=<dir>/<name>`) the
 * supervisor opens with serialport exactly like a ttyUSB, or an in-process port (`wire: 'memory'`).
 * The model answers what arrives. Unplug removes the tty path; a reset unplugs, waits, plugs the
 * same path back and sends RDY.
 */
export class SimModem {
  readonly model: Ec25Model;
  private readonly wire: SimWire;
  private input = '';
  private tickTimer: NodeJS.Timeout | undefined;
  private lastHostCall = false;
  private readonly listeners = new Set<(event: SimModemEvent) => void>();
  private generation = 0;
  private enumerated = 0;
  private readonly log: Logger;

  constructor(private readonly options: SimModemOptions) {
    this.model = new Ec25Model(options.profile, Date.now, options.random ?? Math.random);
    this.wire = options.wire === 'memory' ? new MemoryWire() : new PtyWire();
    this.log = (options.log ?? silentLogger).child({ component: 'sim', modem: options.profile.imei });
  }

  get imei(): string {
    return this.options.profile.imei;
  }

  get atPort(): string {
    return join(this.options.dir, this.options.name);
  }

  get plugged(): boolean {
    return this.wire.isOpen;
  }

  /** How many times the tty appeared (1 after start, +1 per re-enumeration or replug). */
  get enumerations(): number {
    return this.enumerated;
  }

  /** The USB network function in effect (`AT+QCFG="usbnet"`): 0 QMI, 1 ECM, 2 MBIM, 3 RNDIS. */
  get usbnet(): UsbNet {
    return this.model.usbnet;
  }

  /** The host's data call is up (and the modem is plugged). */
  get hostCall(): boolean {
    return this.wire.isOpen && this.model.hostCall;
  }

  /** Listens to host-call and plug events; returns the unsubscribe. */
  onEvent(listener: (event: SimModemEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: SimModemEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch (err) {
        this.log.warn({ err }, 'sim event listener failed');
      }
    }
  }

  setFaults(faults: Partial<SimFaults>): void {
    Object.assign(this.options.profile.faults, faults);
    this.tick();
  }

  /**
   * The network deactivates the default PDN (docs/ec25.md §4): the host's call drops,
   * `+CGEV: NW PDN DEACT 1` when CGEREP is on; the modem stays attached and can be redialled.
   */
  dropCall(): void {
    this.model.dropCall();
    this.tick();
  }

  /** The network detaches the modem (`+CGEV: NW DETACH`); it attaches again after attachMs. */
  detachNetwork(): void {
    this.model.detachNetwork();
    this.tick();
  }

  /**
   * Fault injection: raw bytes from the modem's side of the tty, outside any answer (garbage,
   * NULs, over-long lines, half answers, answers to commands never sent). Latin-1: one char, one byte.
   */
  inject(bytes: string | Buffer): void {
    if (!this.wire.isOpen) throw new Error(`${this.atPort} is not plugged`);
    this.write(typeof bytes === 'string' ? bytes : bytes.toString('latin1'));
  }

  /** Plug in: the tty appears, then after the boot time RDY and the boot URCs. */
  async start(): Promise<void> {
    if (this.wire.isOpen) return;
    const generation = ++this.generation;
    this.model.powerOn();
    this.input = '';
    await this.wire.open(this.atPort, (chunk) => this.onInput(chunk));
    this.enumerated++;
    const live = (): boolean => this.generation === generation && this.wire.isOpen && !this.model.faults.hang;
    const busyMs = this.model.faults.simBusyMs;
    // RDY, then the SIM's URCs (after the SIM's busy time)
    setTimeout(() => {
      if (!live()) return;
      if (busyMs > 0) {
        this.write(this.model.bootText());
        setTimeout(() => {
          if (live()) this.write(this.model.simReadyText());
        }, busyMs).unref();
      } else this.write(this.model.bootText() + this.model.simReadyText());
    }, this.model.bootDelayMs).unref();
    this.tickTimer = setInterval(() => this.tick(), TICK_MS);
    this.tickTimer.unref();
    this.emit({ type: 'plugged', enumerations: this.enumerated });
  }

  /** Unplug: the tty disappears (and with it the host's call). */
  async stop(): Promise<void> {
    this.generation++;
    clearInterval(this.tickTimer);
    this.tickTimer = undefined;
    const was = this.wire.isOpen;
    this.model.powerOff();
    await this.wire.close();
    this.checkHostCall();
    if (was) this.emit({ type: 'unplugged' });
  }

  unplug(): Promise<void> {
    return this.stop();
  }

  /** AT+CFUN=1,1 or a USB reset: gone for `resetMs`, then back at the same path with RDY. */
  async reenumerate(): Promise<void> {
    await this.stop();
    const generation = this.generation;
    await sleep(this.model.draw('resetMs'));
    // unplugged (or restarted) meanwhile: a reset does not bring back a modem that was pulled out
    if (this.generation !== generation || this.wire.isOpen) return;
    await this.start();
  }

  private write(text: string): void {
    if (text.length > 0) this.wire.write(text);
  }

  private onInput(chunk: Buffer): void {
    this.input += chunk.toString('latin1');
    if (this.input.length > MAX_INPUT) this.input = this.input.slice(-MAX_INPUT);
    let cr: number;
    while ((cr = this.input.indexOf('\r')) >= 0) {
      const command = this.input.slice(0, cr).replace(/\n/g, '').trim();
      this.input = this.input.slice(cr + 1);
      if (command) this.respond(command);
    }
  }

  private respond(command: string): void {
    const answer = this.model.handle(command);
    const generation = this.generation;
    const send = (): void => {
      if (this.generation !== generation) return;
      this.write(answer.text);
      this.tick();
      if (answer.reset) {
        // the OK goes out, then USB drops and comes back
        setTimeout(() => {
          if (this.generation === generation)
            void this.reenumerate().catch((err: unknown) => this.log.warn({ err }, 'sim reset failed'));
        }, 50);
      }
    };
    if (answer.delayMs > 0) setTimeout(send, answer.delayMs);
    else send();
  }

  /** Writes queued URCs and reports a change of the host's call. */
  private tick(): void {
    if (this.wire.isOpen) {
      const urcs = this.model.takeUrcs();
      if (urcs.length > 0 && !this.model.faults.hang) this.write(frame(urcs));
    }
    this.checkHostCall();
  }

  private checkHostCall(): void {
    const up = this.hostCall;
    if (up === this.lastHostCall) return;
    this.lastHostCall = up;
    this.emit({ type: 'hostCall', up });
  }
}
