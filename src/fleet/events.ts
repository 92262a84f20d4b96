import type { AlertInfo } from '../../machines/modemTypes.js';
import { silentLogger, type Logger } from '../log.js';
import type { Allocation, Command, HealthSample, TransitionRecord } from '../store/types.js';

export interface CommandOutcome {
  ok: boolean;
  result: Record<string, unknown>;
}

/**
 * Everything the fleet tells the rest of the program, by name (in the manner of graphile-worker's
 * `WorkerEventMap`). The journal writer, the health writer, the alert queue, the counters the
 * inspector's metrics read, and tests subscribe; nobody hands callbacks into a modem.
 */
export interface FleetEventMap {
  /** A lifecycle transition, numbered, as it goes to the journal (by the rule in modemJournal.ts). */
  transition: TransitionRecord;
  /** A modem's IMEI is known and its journal position settled. */
  identified: { imei: string; usbPath: string };
  /** A modem got its ports, routing table and credentials (sticky per IMEI). */
  allocated: Allocation;
  /** A signal sample (activity: a health row, never a journal row). */
  health: HealthSample;
  /** Raised by a modem, the journal, the fleet or the data plane; `imei` when it is one modem's. */
  alert: { alert: AlertInfo; imei?: string | undefined };
  /** A command is about to be carried out by this host. */
  'command.started': { command: Command };
  /** A command was carried out here, before its result is written. */
  'command.finished': { command: Command; outcome: CommandOutcome };
  /** A modem's routing and proxies were started (online, with an address and ports). */
  'dataplane.up': { imei: string; iface: string; wanIp: string; socksPort: number; httpPort: number };
  /** ... and torn down (the modem left `online`, went away, or the supervisor stops). */
  'dataplane.down': { imei: string };
  /** A proxy process exited or failed to start and is restarted (within its restart intensity). */
  'proxy.restarted': { imei: string };
  /**
   * What an echo server saw through a modem's own port (`seen` null: no answer; `ok` false: no
   * answer, or the host's own address: a leak). `expected` is the modem's own (private) address.
   */
  egress: { imei: string; expected: string; seen: string | null; ok: boolean };
  /** The public address seen through a modem's port changed (`previous` null: the first one). */
  'public.changed': { imei: string; publicIp: string; previous: string | null; wanIp: string };
}

export type FleetEventName = keyof FleetEventMap;
type Listener<K extends FleetEventName> = (payload: FleetEventMap[K]) => void;

/**
 * A small synchronous typed emitter. A listener that throws is logged and does not stop the
 * others, nor the modem that emitted: a broken subscriber must not break the farm.
 */
export class FleetEvents {
  private readonly listeners = new Map<FleetEventName, Set<Listener<never>>>();
  private readonly log: Logger;

  constructor(log: Logger = silentLogger) {
    this.log = log.child({ component: 'events' });
  }

  /** Subscribes; returns the unsubscribe function. */
  on<K extends FleetEventName>(name: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  emit<K extends FleetEventName>(name: K, payload: FleetEventMap[K]): void {
    const set = this.listeners.get(name);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<K>)(payload);
      } catch (err) {
        this.log.error({ err, event: name }, 'fleet event listener failed');
      }
    }
  }
}

/** Counters kept from the event stream (read by `Supervisor.status()` and the inspector's metrics). */
export class FleetCounters {
  proxyRestarts = 0;
  egressChecks = 0;
  egressFailures = 0;
  alertsRaised = 0;
  dataPlanesUp = 0;
  /** Rotations carried out here by result: `done`, or the error code (`same_public_ip`, ...). */
  readonly rotations = new Map<string, number>([
    ['done', 0],
    ['same_public_ip', 0],
  ]);

  constructor(events: FleetEvents) {
    events.on('command.finished', ({ command, outcome }) => {
      if (command.kind !== 'rotate') return;
      const code = outcome.ok ? 'done' : outcome.result['error'];
      // a label value from a small known set: anything unexpected is counted as `other`
      const result = typeof code === 'string' && /^[a-z_]{1,32}$/.test(code) ? code : 'other';
      this.rotations.set(result, (this.rotations.get(result) ?? 0) + 1);
    });
    events.on('proxy.restarted', () => void this.proxyRestarts++);
    events.on('egress', ({ ok }) => {
      this.egressChecks++;
      if (!ok) this.egressFailures++;
    });
    events.on('alert', () => void this.alertsRaised++);
    events.on('dataplane.up', () => void this.dataPlanesUp++);
    events.on('dataplane.down', () => void this.dataPlanesUp--);
  }
}
