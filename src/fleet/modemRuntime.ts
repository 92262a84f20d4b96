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

export interface ModemRuntimeOptions extends Omit<ModemLinkOptions, 'log'> {
  /** The USB physical path (the actor's identity until the IMEI is read). */
  usbPath: string;
  config?: Partial<ModemConfig>;
  desired?: 'enabled' | 'disabled';
  log?: Logger;
  onHealth?: (signal: SignalSample) => void;
  onAlert?: (alert: AlertInfo) => void;
  onCommandFinished?: (result: CommandResult) => void;
  /** Every change of the state value, in order, synchronously. */
  onTransition?: (transition: ModemTransition) => void;
}

/** A modem machine wired to its link: the actor runs the real effects over the AT port. */
export class ModemRuntime {
  readonly link: ModemLink;
  readonly actor: Actor<typeof modemMachine>;
  private readonly log: Logger;
  private lastState: string | null = null;

  constructor(options: ModemRuntimeOptions) {
    this.log = (options.log ?? silentLogger).child({ usbPath: options.usbPath });
    this.link = new ModemLink({ ...options, log: this.log });
    const machine = modemMachine.provide({
      actors: this.link.actors(),
      actions: {
        reportHealth: (_, params) => options.onHealth?.(params.signal),
        raiseAlert: (_, params) => {
          this.log.warn({ alert: params }, 'modem alert');
          options.onAlert?.(params);
        },
        commandFinished: (_, params) => {
          if (params) options.onCommandFinished?.(params);
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
        options.onTransition?.({ from, to, event: ev.event.type, snapshot });
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
