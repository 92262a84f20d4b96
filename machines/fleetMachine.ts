import { assign, enqueueActions, fromPromise, setup } from 'xstate';

/**
 * The fleet: which modems run, decided from batches of device changes, modem ends and crashes.
 * Pure: it keeps plain records, not actor references, and names what src/ does (`startModems`,
 * `stopModem`, `forward`, `alert`). Modem actors are started in batches (one event for a whole
 * scan or hotplug burst), never one xstate child per event, which is quadratic in the child count.
 * Supervision is one_for_one: a crashed modem actor is restarted alone, at most `maxRestarts`
 * times in `restartWindowMs`; beyond that it stays stopped with an alert until it is replugged.
 */

export interface FleetDevice {
  usbPath: string;
  atPort: string;
  /** The modem's network interface (wwanN), when detection found one. */
  iface?: string | undefined;
  /** Every option-bound tty, the preferred AT port first. */
  atCandidates?: readonly string[] | undefined;
  /** The USB device's sysfs directory (the USB-level reset). */
  sysPath?: string | undefined;
}

export interface FleetModem extends FleetDevice {
  status: 'running' | 'failed';
  /** Times of recent restarts (restart intensity). */
  restarts: number[];
}

export interface FleetConfig {
  maxRestarts: number;
  restartWindowMs: number;
}

export interface FleetContext {
  modems: Record<string, FleetModem>;
  config: FleetConfig;
  now: () => number;
}

export type FleetEvent =
  | { type: 'devices.changed'; added: FleetDevice[]; removed: string[] }
  | { type: 'modem.done'; usbPath: string }
  | { type: 'modem.crashed'; usbPath: string; error: string }
  | { type: 'stop' };

export interface FleetInput {
  config?: Partial<FleetConfig>;
  now?: () => number;
}

export const DEFAULT_FLEET_CONFIG: FleetConfig = { maxRestarts: 5, restartWindowMs: 600_000 };

type Forward = { usbPath: string; event: 'device.added' | 'device.removed' };

interface DevicePlan {
  modems: Record<string, FleetModem>;
  start: FleetDevice[];
  forward: Forward[];
}

/** What a batch of device changes means for the fleet. Pure; exported for tests. */
export function planDevices(
  modems: Readonly<Record<string, FleetModem>>,
  added: readonly FleetDevice[],
  removed: readonly string[],
): DevicePlan {
  const next = { ...modems };
  const start: FleetDevice[] = [];
  const forward: Forward[] = [];
  for (const usbPath of removed) {
    const m = next[usbPath];
    if (!m) continue;
    if (m.status === 'running') forward.push({ usbPath, event: 'device.removed' });
    // the actor decides: `removed` (then modem.done) or waiting for a re-enumeration
    else delete next[usbPath];
  }
  for (const device of added) {
    const m = next[device.usbPath];
    if (m?.status === 'running' && m.atPort === device.atPort) {
      forward.push({ usbPath: device.usbPath, event: 'device.added' });
      continue;
    }
    if (m?.status === 'running') {
      // a different tty at the same place: the old actor cannot use it; start over
      forward.push({ usbPath: device.usbPath, event: 'device.removed' });
    }
    next[device.usbPath] = { ...device, status: 'running', restarts: m?.restarts ?? [] };
    start.push(device);
  }
  return { modems: next, start, forward };
}

export const fleetMachine = setup({
  // the assertion carries the types (xstate's pattern); the rule cannot see that and its fix drops them
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
  types: {} as { context: FleetContext; events: FleetEvent; input: FleetInput },
  actors: {
    /** Stops every modem actor (children first) and flushes what they wrote. */
    stopAll: fromPromise<void>(() => Promise.reject(new Error('effect stopAll not provided'))),
  },
  actions: {
    startModems: (_args, _params: { devices: FleetDevice[] }) => {},
    stopModem: (_args, _params: { usbPath: string }) => {},
    forward: (_args, _params: Forward) => {},
    alert: (_args, _params: { usbPath: string; kind: string; message: string }) => {},
  },
}).createMachine({
  id: 'fleet',
  context: ({ input }) => ({
    modems: {},
    config: { ...DEFAULT_FLEET_CONFIG, ...input.config },
    now: input.now ?? Date.now,
  }),
  initial: 'running',
  states: {
    running: {
      on: {
        'devices.changed': {
          actions: enqueueActions(({ context, event, enqueue }) => {
            const plan = planDevices(context.modems, event.added, event.removed);
            enqueue.assign({ modems: plan.modems });
            for (const f of plan.forward) enqueue({ type: 'forward', params: f });
            if (plan.start.length > 0) enqueue({ type: 'startModems', params: { devices: plan.start } });
          }),
        },
        'modem.done': {
          actions: enqueueActions(({ context, event, enqueue }) => {
            if (!context.modems[event.usbPath]) return;
            const { [event.usbPath]: _gone, ...rest } = context.modems;
            enqueue.assign({ modems: rest });
            enqueue({ type: 'stopModem', params: { usbPath: event.usbPath } });
          }),
        },
        'modem.crashed': {
          actions: enqueueActions(({ context, event, enqueue }) => {
            const m = context.modems[event.usbPath];
            if (m?.status !== 'running') return;
            const now = context.now();
            const restarts = [...m.restarts.filter((t) => now - t < context.config.restartWindowMs), now];
            enqueue({ type: 'stopModem', params: { usbPath: event.usbPath } });
            if (restarts.length > context.config.maxRestarts) {
              enqueue.assign({
                modems: { ...context.modems, [event.usbPath]: { ...m, status: 'failed', restarts } },
              });
              enqueue({
                type: 'alert',
                params: {
                  usbPath: event.usbPath,
                  kind: 'modem_restart_intensity',
                  message: `the modem actor at ${event.usbPath} crashed ${restarts.length} times in ${context.config.restartWindowMs} ms; left stopped until it is replugged (last: ${event.error.slice(0, 200)})`,
                },
              });
              return;
            }
            enqueue.assign({ modems: { ...context.modems, [event.usbPath]: { ...m, restarts } } });
            enqueue({
              type: 'startModems',
              params: { devices: [{ usbPath: m.usbPath, atPort: m.atPort, iface: m.iface }] },
            });
          }),
        },
        stop: 'stopping',
      },
    },
    stopping: {
      invoke: {
        src: 'stopAll',
        onDone: { target: 'stopped', actions: assign({ modems: {} }) },
        onError: { target: 'stopped', actions: assign({ modems: {} }) },
      },
    },
    stopped: { type: 'final' },
  },
});
