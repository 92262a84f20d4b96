import { createActor, type Actor, type SnapshotFrom, type StateValue } from 'xstate';
import { modemMachine } from '../../machines/modemMachine.js';
import type {
  AlertInfo,
  CommandResult,
  ModemConfig,
  ModemEvent,
  SignalSample,
} from '../../machines/modemTypes.js';
import { silentLogger, type Logger } from '../log.js';
import { ModemLink, type ModemLinkOptions } from './modemLink.js';

export type ModemSnapshot = SnapshotFrom<typeof modemMachine>;

/** `online.rotating.detaching` for `{ online: { rotating: 'detaching' } }`. */
export function stateName(value: StateValue): string {
  if (typeof value === 'string') return value;
  return Object.entries(value)
    .map(([k, v]) => (v === undefined ? k : `${k}.${stateName(v)}`))
    .join(',');
}

export interface ModemTransition {
  /** null for the actor's first state. */
  from: string | null;
  to: string;
  /** The event that caused it (`xstate.init` for the first state). */
  event: string;
  snapshot: ModemSnapshot;
}

/** What the machine reports, in order, synchronously: one typed stream instead of callbacks. */
export type ModemOutput =
  /** Every change of the state value (poll loops included: the journal rule is the owner's). */
  | { type: 'transition'; transition: ModemTransition }
  | { type: 'health'; signal: SignalSample }
  | { type: 'alert'; alert: AlertInfo }
  | { type: 'commandFinished'; result: CommandResult };

export interface ModemRuntimeOptions extends Omit<ModemLinkOptions, 'log'> {
  /** The USB physical path (the actor's identity until the IMEI is read). */
  usbPath: string;
  config?: Partial<ModemConfig>;
  desired?: 'enabled' | 'disabled';
  log?: Logger;
  /** Where the machine's output goes (the `Modem` that owns this runtime). */
  output?: (output: ModemOutput) => void;
}

/**
 * A modem machine wired to its link: the actor runs the real effects over the AT port. What the
 * modem does lives here and in ModemLink (usable alone, as the lifecycle tests do); what the farm
 * does with it (journal, allocation, data plane, commands) lives in `Modem`.
 */
export class ModemRuntime {
  readonly link: ModemLink;
  readonly actor: Actor<typeof modemMachine>;
  private readonly log: Logger;
  private lastState: string | null = null;

  constructor(options: ModemRuntimeOptions) {
    this.log = options.log ?? silentLogger;
    const output = options.output ?? (() => undefined);
    this.link = new ModemLink({ ...options, log: this.log });
    const machine = modemMachine.provide({
      actors: this.link.actors(),
      actions: {
        reportHealth: (_, params) => output({ type: 'health', signal: params.signal }),
        raiseAlert: (_, params) => output({ type: 'alert', alert: params }),
        commandFinished: (_, params) => {
          if (params) output({ type: 'commandFinished', result: params });
        },
      },
    });
    this.actor = createActor(machine, {
      // the inspection stream carries the event with each snapshot of this actor
      inspect: (ev) => {
        if (ev.type !== '@xstate.snapshot' || ev.actorRef !== this.actor) return;
        const snapshot = ev.snapshot as ModemSnapshot;
        const to = stateName(snapshot.value);
        if (to === this.lastState) return;
        const from = this.lastState;
        this.lastState = to;
        output({ type: 'transition', transition: { from, to, event: ev.event.type, snapshot } });
      },
      input: {
        usbPath: options.usbPath,
        ...(options.config ? { config: options.config } : {}),
        ...(options.desired ? { desired: options.desired } : {}),
      },
    });
  }

  start(): void {
    this.link.onEvent((event) => this.send(event));
    this.link.start();
    // removed is final: the port is released at once
    this.actor.subscribe({
      next: (snapshot) => {
        if (snapshot.status === 'done') void this.link.stop();
      },
      error: (err) => this.log.error({ err }, 'modem actor failed'),
    });
    this.actor.start();
  }

  send(event: ModemEvent): void {
    if (this.actor.getSnapshot().status === 'active') this.actor.send(event);
  }

  snapshot(): ModemSnapshot {
    return this.actor.getSnapshot();
  }

  /** Stops the actor and closes the port. Idempotent. */
  async stop(): Promise<void> {
    this.actor.stop();
    await this.link.stop();
  }
}
