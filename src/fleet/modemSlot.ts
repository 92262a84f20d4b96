import type { CommandResult, ModemIdentity } from '../../machines/modemTypes.js';
import type { Logger } from '../log.js';
import type { TransitionRecord } from '../store/types.js';
import type { CommandOutcome } from './commandProcessor.js';
import type { ModemDataPlane } from './dataPlane.js';
import type { ModemRuntime, ModemTransition } from './modemRuntime.js';

/** Short journal names for xstate's internal events: `done.probe`, `error.connect`, `after.backoff`. */
export function eventName(type: string): string {
  const m = /^xstate\.(done|error)\.actor\.(.+)$/.exec(type) ?? /^xstate\.(after)\.([^.]+)\./.exec(type);
  return (m ? `${m[1]}.${m[2]}` : type).slice(0, 64);
}

/** Transitions kept while the IMEI is unknown (a modem that never answers is not journaled). */
const MAX_UNIDENTIFIED = 200;

/**
 * One running modem as the supervisor sees it: its runtime, its journal numbering and the
 * commands waiting for their result. Transitions before the IMEI is known are held, then written
 * under the IMEI with the next sequence numbers of that modem's journal.
 */
export class ModemSlot {
  imei: string | null = null;
  identified = false;
  /** No ports were free for this modem: it cannot serve (it goes to `error` once online). */
  noPorts: string | undefined;
  /** The IMEI is the one last seen at this USB path, not yet confirmed over AT. */
  presumed = false;
  /** The IMEI read over AT was looked at (identification runs once per slot). */
  identityChecked = false;
  /** Routing and proxy of this modem while it is online (rest_for_one children). */
  dataPlane: ModemDataPlane | undefined;
  /** The modem's network interface from detection. */
  iface: string | undefined;
  egressTimer: NodeJS.Timeout | undefined;
  private held: ModemTransition[] = [];
  private readonly waiting = new Map<number, (outcome: CommandOutcome) => void>();

  constructor(
    readonly usbPath: string,
    readonly atPort: string,
    readonly runtime: ModemRuntime,
    private readonly hostId: string,
    private readonly append: (record: TransitionRecord) => void,
    /** The next sequence number of a modem's journal (kept by the supervisor across actors). */
    private readonly nextSeq: (imei: string) => number,
    private readonly log: Logger,
  ) {}

  /** The IMEI is known and its journal position settled: held transitions are written. */
  identify(imei: string): void {
    this.imei = imei;
    this.identified = true;
    this.presumed = false;
    for (const t of this.held.splice(0)) this.write(t);
  }

  /**
   * Journal under the IMEI last seen at this USB path until AT confirms it, so that the database
   * follows a known modem from its first state (and sees it `removed` if it goes away unidentified).
   */
  presume(imei: string): void {
    this.imei = imei;
    this.identified = true;
    this.presumed = true;
  }

  /** AT says another modem sits here: its transitions are held until its journal is settled. */
  unpresume(): void {
    this.imei = null;
    this.identified = false;
    this.presumed = false;
  }

  transition(t: ModemTransition): void {
    if (this.identified) return this.write(t);
    if (this.held.length < MAX_UNIDENTIFIED) this.held.push(t);
    else this.log.warn({ to: t.to }, 'transition of an unidentified modem not journaled (too many held)');
  }

  private write(t: ModemTransition): void {
    const imei = this.imei;
    if (!imei) return;
    const ctx = t.snapshot.context;
    const top = t.to.split('.')[0];
    this.append({
      imei,
      seq: this.nextSeq(imei),
      from: t.from,
      to: t.to,
      event: eventName(t.event),
      at: new Date(),
      host: this.hostId,
      reason: top === 'error' ? (ctx.reason ?? undefined) : undefined,
      wanIp: top === 'online' ? (ctx.wanIp ?? undefined) : undefined,
      detail: {
        usbPath: this.usbPath,
        ...(ctx.reason ? { reason: ctx.reason } : {}),
        ...(ctx.lastError ? { lastError: ctx.lastError } : {}),
        ...(ctx.wanIp ? { wanIp: ctx.wanIp } : {}),
        ...(ctx.registration ? { registration: ctx.registration } : {}),
      },
    });
  }

  identity(): ModemIdentity | null {
    return this.runtime.snapshot().context.identity;
  }

  /** Sends a command to the machine; resolves with its result, or fails after `timeoutMs`. */
  command(id: number, kind: CommandResult['kind'], timeoutMs: number): Promise<CommandOutcome> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ ok: false, result: { error: 'timeout', timeoutMs } });
      }, timeoutMs);
      timer.unref();
      this.waiting.set(id, (outcome) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(outcome);
      });
      this.runtime.send({ type: `command.${kind}`, id });
    });
  }

  finished(result: CommandResult): void {
    this.waiting.get(result.id)?.({ ok: result.ok, result: result.result });
  }

  /** Every command still waiting fails with `error` (the modem went away or the supervisor stops). */
  abandon(error: string): void {
    for (const resolve of [...this.waiting.values()]) resolve({ ok: false, result: { error } });
  }
}
