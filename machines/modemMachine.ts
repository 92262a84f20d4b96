import { assign, fromPromise, setup, type DoneActorEvent } from 'xstate';
import {
  DEFAULT_MODEM_CONFIG,
  FATAL_REASONS,
  LADDER,
  REASONS,
  type AlertInfo,
  type CommandKind,
  type CommandResult,
  type ModemContext,
  type ModemEvent,
  type ModemIdentity,
  type ModemInput,
  type PendingCommand,
  type Reason,
  type RegistrationStat,
  type Rung,
  type SignalSample,
  type SimState,
} from './modemTypes.js';

/**
 * One modem's life: detecting → initializing → online, with a recovery ladder, operator commands,
 * `disabled`, `error` (always with a reason) and the final `removed`. Pure: every effect is named
 * here and supplied by src/ through `modemMachine.provide()`; time only through named delays.
 */

const notProvided = (name: string) => () => Promise.reject(new Error(`effect ${name} not provided`));

const REGISTERED: readonly RegistrationStat[] = ['home', 'roaming'];

/**
 * The reason a failed effect stands for: the error's code where it is a reason (the transport's
 * `at_timeout`, `port_lost`, `unexpected_answer`; the link's `raw_ip_off`, `no_data_call`), else
 * `fallback`.
 */
export function reasonOf(error: unknown, fallback: Reason): Reason {
  const code = (error as { code?: unknown } | null)?.code;
  return (REASONS as readonly unknown[]).includes(code) ? (code as Reason) : fallback;
}

/** The failed effect's error is one no recovery can fix (FATAL_REASONS): `error` at once. */
const fatal = ({ event }: { event: unknown }): boolean =>
  FATAL_REASONS.has(reasonOf(errorOf(event), 'hardware_fault'));

/** The link switched `usbnet` back to QMI and reset the modem: wait for it like any reset. */
const usbnetSwitching = ({ event }: { event: unknown }): boolean =>
  (errorOf(event) as { code?: unknown } | null)?.code === 'usbnet_switching';

const describe = (error: unknown): string =>
  String((error as { message?: unknown } | null)?.message ?? error).slice(0, 200);

/**
 * A failed command's result: a stable code (the error's own, like `at_timeout` or `port_lost`,
 * else `fallback`) that clients can match on, and the description for people.
 */
const failure = (error: unknown, fallback: string): { error: string; message: string } => {
  const code = (error as { code?: unknown } | null)?.code;
  return {
    error: typeof code === 'string' && /^[a-z][a-z0-9_]{0,63}$/.test(code) ? code : fallback,
    message: describe(error ?? fallback),
  };
};

/** The rung to climb now: the first one at or after `context.rung` that is configured. */
export function rungNow(context: Pick<ModemContext, 'config' | 'rung'>): {
  rung: Rung | undefined;
  index: number;
} {
  for (let index = context.rung; index < LADDER.length; index++) {
    const rung = LADDER[index];
    if (rung === 'usbReset' && !context.config.usbReset) continue;
    if (rung === 'powerCycle' && !context.config.powerCycle) continue;
    return { rung, index };
  }
  return { rung: undefined, index: LADDER.length };
}

export function backoffFor(context: Pick<ModemContext, 'config' | 'rung'>): number {
  return Math.min(context.config.backoffCapMs, context.config.backoffBaseMs * 2 ** context.rung);
}

const errorOf = (event: unknown): unknown => (event as { error?: unknown }).error;

/** Assigner for a failed effect: its reason and a bounded description. */
const fail =
  (reason: Reason) =>
  ({ event }: { event: unknown }): Pick<ModemContext, 'reason' | 'lastError'> => ({
    reason: reasonOf(errorOf(event), reason),
    lastError: errorOf(event) === undefined ? reason : describe(errorOf(event)),
  });

const failWith = (reason: Reason, lastError: string) => (): Pick<ModemContext, 'reason' | 'lastError'> => ({
  reason,
  lastError,
});

/** Command results, as params of the `commandFinished` action. */
const finished =
  (ok: boolean) =>
  ({ context, event }: { context: ModemContext; event: unknown }): CommandResult | null =>
    context.command
      ? {
          ...context.command,
          ok,
          result: ok ? {} : failure(errorOf(event), 'failed'),
        }
      : null;

const rotationResult =
  (outcome: 'succeeded' | 'same_address' | 'failed') =>
  ({ context, event }: { context: ModemContext; event: unknown }): CommandResult | null => {
    const rotation = context.rotation;
    if (!rotation) return null;
    const address = (event as Partial<DoneActorEvent<{ address: string }>>).output?.address ?? null;
    const attempts = rotation.attempt + 1;
    switch (outcome) {
      case 'succeeded':
        return {
          ...rotation.command,
          ok: true,
          result: { previousIp: rotation.previousIp, wanIp: address, attempts },
        };
      case 'same_address':
        return {
          ...rotation.command,
          ok: false,
          result: { error: 'rotation_failed', wanIp: address, attempts },
        };
      case 'failed':
        return {
          ...rotation.command,
          ok: false,
          result: failure(errorOf(event), 'rotation_interrupted'),
        };
    }
  };

function commandOf(event: ModemEvent | { type: string }): PendingCommand | null {
  if (!('id' in event) || !event.type.startsWith('command.')) return null;
  return { id: event.id, kind: event.type.slice('command.'.length) as CommandKind };
}

const reject = (id: number, kind: CommandKind, error: string): CommandResult => ({
  id,
  kind,
  ok: false,
  result: { error },
});

const absent =
  (kind: CommandKind) =>
  ({ event }: { event: ModemEvent }): CommandResult =>
    reject('id' in event ? event.id : 0, kind, 'device_absent');

/**
 * Every command gets exactly one result. A rotation cut short by another event, a reset/disable/
 * enable whose state was left before it finished, and one replaced by a newer command are
 * answered as failed. Params of `commandFinished` (null: nothing to answer).
 */
const rotationInterrupted = ({ context }: { context: ModemContext }): CommandResult | null =>
  context.rotation ? reject(context.rotation.command.id, 'rotate', 'interrupted') : null;
const commandInterrupted = ({ context }: { context: ModemContext }): CommandResult | null =>
  context.command ? reject(context.command.id, context.command.kind, 'interrupted') : null;
const commandSuperseded = ({ context }: { context: ModemContext }): CommandResult | null =>
  context.command ? reject(context.command.id, context.command.kind, 'superseded') : null;

const interruptRotation = [
  { type: 'commandFinished', params: rotationInterrupted },
  'clearRotation',
] as const;
const interruptAll = [
  ...interruptRotation,
  { type: 'commandFinished', params: commandInterrupted },
  'forgetCommand',
] as const;
const supersede = { type: 'commandFinished', params: commandSuperseded } as const;

const modemSetup = setup({
  types: {
    context: {} as ModemContext,
    events: {} as ModemEvent,
    input: {} as ModemInput,
  },
  actors: {
    /** `AT` answers. */
    probe: fromPromise<void>(notProvided('probe')),
    /** Echo off and CMEE, then ATI, IMEI, ICCID, IMSI (ICCID/IMSI null without a SIM). */
    readIdentity: fromPromise<ModemIdentity>(notProvided('readIdentity')),
    checkSim: fromPromise<SimState>(notProvided('checkSim')),
    queryRegistration: fromPromise<{ stat: RegistrationStat; operator: string | null }>(
      notProvided('queryRegistration'),
    ),
    /**
     * The data call: link down, raw-IP on, APN, `AT$QCRMCALL=1,1`, address and settings, MTU, link
     * up (rejects with `raw_ip_off`, `no_data_call`, `data_call_failed`).
     */
    connect: fromPromise<{ address: string }>(notProvided('connect')),
    /** The call again, after it went down while attached (same steps as connect). */
    redial: fromPromise<{ address: string }>(notProvided('redial')),
    /** Signal, and whether the host's data call is still up. */
    pollSignal: fromPromise<{ signal: SignalSample; callUp: boolean }>(notProvided('pollSignal')),
    /** AT+CFUN=0 / AT+CFUN=1. */
    detach: fromPromise<void>(notProvided('detach')),
    attach: fromPromise<void>(notProvided('attach')),
    /** AT+CFUN=0 then AT+CFUN=1. */
    softReset: fromPromise<void>(notProvided('softReset')),
    /** AT+CFUN=1,1: the modem drops off USB and comes back with RDY. */
    hardReset: fromPromise<void>(notProvided('hardReset')),
    /** sysfs `authorized` 0 → 1: the device re-enumerates without losing power. */
    usbReset: fromPromise<void>(notProvided('usbReset')),
    /** The configured USB power-cycle command. */
    powerCycle: fromPromise<void>(notProvided('powerCycle')),
    /** AT+CFUN=4. */
    disableRadio: fromPromise<void>(notProvided('disableRadio')),
  },
  actions: {
    /** Effects reported to the supervisor (no-ops until provided). */
    reportHealth: (_args, _params: { signal: SignalSample }) => {},
    raiseAlert: (_args, _params: AlertInfo) => {},
    /** `null` when the transition carried no command (e.g. a disable from reconciliation). */
    commandFinished: (_args, _params: CommandResult | null) => {},

    rememberCommand: assign(({ event }) => ({ command: commandOf(event) })),
    forgetCommand: assign({ command: null }),
    clearRotation: assign({ rotation: null }),
    startRotation: assign(({ context, event }) => ({
      rotation:
        'id' in event
          ? { command: { id: event.id, kind: 'rotate' as const }, attempt: 0, previousIp: context.wanIp }
          : null,
    })),
    nextRung: assign({ rung: ({ context }) => rungNow(context).index + 1 }),
    clearRecovery: assign({ rung: 0, recoveries: [] as number[], reason: null, lastError: null }),
  },
  delays: {
    probeRetry: ({ context }) => context.config.probeRetryMs,
    simRetry: ({ context }) =>
      Math.min(context.config.backoffCapMs, context.config.simRetryMs * 2 ** context.simAttempt),
    registrationPoll: ({ context }) => context.config.registrationPollMs,
    signalPoll: ({ context }) => context.config.signalPollMs,
    detachTime: ({ context }) => context.config.detachMs,
    reenumeration: ({ context }) => context.config.reenumerationMs,
    backoff: ({ context }) => backoffFor(context),
  },
  guards: {
    probesExhausted: ({ context }) => context.probeAttempt + 1 >= context.config.probeAttempts,
    intensityExceeded: ({ context }) => context.recoveries.length > context.config.maxRecoveries,
    registrationTimedOut: ({ context }) =>
      context.now() - context.registrationSince >= context.config.registrationTimeoutMs,
  },
});

/** The actions that answer and forget a rotation cut short (none outside a rotation). */
const abortRotation = [
  { type: 'commandFinished', params: rotationResult('failed') },
  'clearRotation',
] as const;

/**
 * Registration, written once for the boot (`#modem.initializing`) and the rotation
 * (`#modem.online.rotating`): query `+CREG`/`+CEREG`, wait and query again until registered (then
 * `<scope>.connecting`), denied (error) or timed out (recovering). `abort` runs first on every
 * failure (a rotation answers its command).
 */
const registeringState = (
  scope: '#modem.initializing' | '#modem.online.rotating',
  abort: readonly [] | typeof abortRotation,
  timeoutMessage: string,
) =>
  modemSetup.createStateConfig({
    entry: assign({ registrationSince: ({ context }) => context.now() }),
    initial: 'query',
    states: {
      query: {
        invoke: {
          id: 'queryRegistration',
          src: 'queryRegistration',
          onDone: [
            {
              guard: ({ event }) => REGISTERED.includes(event.output.stat),
              target: `${scope}.connecting`,
              actions: assign({
                registration: ({ event }) => event.output.stat,
                operator: ({ event }) => event.output.operator,
              }),
            },
            {
              guard: ({ event }) => event.output.stat === 'denied',
              target: '#modem.error',
              actions: [...abort, assign(failWith('registration_denied', 'the network denied registration'))],
            },
            // while booting the status shows why it waits; a rotation keeps the registration it
            // had (the modem is still online: its registration is what it serves with)
            scope === '#modem.initializing'
              ? { target: 'waiting', actions: assign({ registration: ({ event }) => event.output.stat }) }
              : { target: 'waiting' },
          ],
          onError: { target: '#modem.recovering', actions: [...abort, assign(fail('at_timeout'))] },
        },
      },
      waiting: {
        after: {
          registrationPoll: [
            {
              guard: 'registrationTimedOut',
              target: '#modem.recovering',
              actions: [...abort, assign(failWith('no_service', timeoutMessage))],
            },
            { target: 'query' },
          ],
        },
      },
    },
  });

/**
 * The data call, written once for the boot and the rotation: `connect` (APN, call, address). The
 * boot goes online with the address; a rotation is done when the address changed, else it detaches
 * again (up to `rotationAttempts`) and then stays online with the old address and an alert. A
 * failure goes to recovering (`data_call_failed`), after answering the rotation.
 */
const connectingState = (mode: 'boot' | 'rotation') =>
  modemSetup.createStateConfig({
    invoke: {
      id: 'connect',
      src: 'connect',
      onDone:
        mode === 'boot'
          ? { target: '#modem.online', actions: assign({ wanIp: ({ event }) => event.output.address }) }
          : [
              {
                guard: ({ context, event }) => event.output.address !== context.rotation?.previousIp,
                target: '#modem.online.serving',
                actions: [
                  { type: 'commandFinished', params: rotationResult('succeeded') },
                  assign({ wanIp: ({ event }) => event.output.address, rotation: null }),
                ],
              },
              {
                guard: ({ context }) =>
                  (context.rotation?.attempt ?? 0) + 1 < context.config.rotationAttempts,
                target: 'detaching',
                actions: assign({
                  wanIp: ({ event }) => event.output.address,
                  rotation: ({ context }) =>
                    context.rotation ? { ...context.rotation, attempt: context.rotation.attempt + 1 } : null,
                }),
              },
              {
                target: '#modem.online.serving',
                actions: [
                  { type: 'commandFinished', params: rotationResult('same_address') },
                  {
                    type: 'raiseAlert',
                    params: ({ context, event }) => ({
                      kind: 'rotation_failed',
                      severity: 'warning' as const,
                      message: `rotation kept ${event.output.address} after ${(context.rotation?.attempt ?? 0) + 1} attempts; the modem stays online`,
                    }),
                  },
                  assign({ wanIp: ({ event }) => event.output.address, rotation: null }),
                ],
              },
            ],
      onError: [
        {
          guard: fatal,
          target: '#modem.error',
          actions: [...(mode === 'boot' ? [] : abortRotation), assign(fail('data_call_failed'))],
        },
        {
          target: '#modem.recovering',
          actions: [...(mode === 'boot' ? [] : abortRotation), assign(fail('data_call_failed'))],
        },
      ],
    },
  });

export const modemMachine = modemSetup.createMachine({
  id: 'modem',
  context: ({ input }) => ({
    usbPath: input.usbPath,
    config: { ...DEFAULT_MODEM_CONFIG, ...input.config },
    now: input.now ?? Date.now,
    identity: null,
    operator: null,
    registration: null,
    wanIp: null,
    signal: null,
    reason: null,
    lastError: null,
    probeAttempt: 0,
    simAttempt: 0,
    registrationSince: 0,
    rung: 0,
    recoveries: [],
    rotation: null,
    desired: input.desired ?? 'enabled',
    command: null,
  }),
  initial: 'detecting',
  on: {
    'device.removed': { target: '.removed' },
    'port.lost': {
      target: '.recovering',
      actions: assign(({ event }) => ({
        reason: 'port_lost' as const,
        lastError: event.detail ?? 'port lost',
      })),
    },
    'command.rotate': {
      actions: { type: 'commandFinished', params: ({ event }) => reject(event.id, 'rotate', 'not_online') },
    },
    'command.reset': { target: '.resetting', actions: [supersede, 'rememberCommand'] },
    'command.disable': {
      target: '.disabling',
      actions: [supersede, 'rememberCommand', assign({ desired: 'disabled' as const })],
    },
    // outside `disabled` the radio is on (or being recovered): enabling only records the wish, so
    // that a modem disabled while it was recovering does not disable itself again
    'command.enable': {
      actions: [
        {
          type: 'commandFinished',
          params: ({ context, event }) => ({
            id: event.id,
            kind: 'enable',
            ok: true,
            result: context.desired === 'enabled' ? { already: 'enabled' } : { desired: 'enabled' },
          }),
        },
        assign({ desired: 'enabled' as const }),
      ],
    },
  },
  states: {
    detecting: {
      entry: [...interruptAll, assign({ probeAttempt: 0, wanIp: null, registration: null })],
      initial: 'probing',
      on: { 'port.lost': {} }, // a port that does not open yet fails the probe
      states: {
        probing: {
          invoke: {
            id: 'probe',
            src: 'probe',
            onDone: { target: '#modem.initializing' },
            onError: [
              { guard: 'probesExhausted', target: '#modem.recovering', actions: assign(fail('at_timeout')) },
              {
                target: 'waiting',
                actions: assign({ probeAttempt: ({ context }) => context.probeAttempt + 1 }),
              },
            ],
          },
        },
        waiting: { after: { probeRetry: 'probing' } },
      },
    },

    initializing: {
      initial: 'identity',
      states: {
        identity: {
          invoke: {
            id: 'readIdentity',
            src: 'readIdentity',
            onDone: [
              // known now (its journal and record), but in another USB network mode: nothing to serve
              {
                guard: ({ event }) => (event.output.usbnet ?? 0) !== 0,
                target: '#modem.error',
                actions: assign(({ event }) => ({
                  identity: event.output,
                  reason: 'usbnet_mode' as const,
                  lastError: `AT+QCFG="usbnet" is ${event.output.usbnet} (${['QMI', 'ECM', 'MBIM', 'RNDIS'][event.output.usbnet ?? 0] ?? '?'}), not 0 (QMI/RmNet): send AT+QCFG="usbnet",0 then AT+CFUN=1,1, or set switchUsbnet`,
                })),
              },
              {
                guard: ({ context }) => context.desired === 'disabled',
                target: '#modem.disabling',
                actions: assign({ identity: ({ event }) => event.output }),
              },
              { target: 'sim', actions: assign({ identity: ({ event }) => event.output, simAttempt: 0 }) },
            ],
            onError: [
              { guard: usbnetSwitching, target: '#modem.resetting.waiting' },
              { guard: fatal, target: '#modem.error', actions: assign(fail('at_timeout')) },
              { target: '#modem.recovering', actions: assign(fail('at_timeout')) },
            ],
          },
        },
        sim: {
          invoke: {
            id: 'checkSim',
            src: 'checkSim',
            onDone: [
              { guard: ({ event }) => event.output === 'ready', target: 'registering' },
              {
                guard: ({ event }) => event.output === 'missing',
                target: '#modem.error',
                actions: assign(failWith('sim_missing', 'no SIM card (CME 10 or 15)')),
              },
              {
                guard: ({ event }) => event.output === 'pin' || event.output === 'puk',
                target: '#modem.error',
                actions: assign(failWith('sim_locked', 'the SIM asks for a PIN or PUK')),
              },
              // busy (CME 14), failing (CME 13) or not ready: often transient after a boot; halfway
              // through the retries the radio is switched off and on (the SIM is read again)
              {
                guard: ({ context }) =>
                  context.simAttempt + 1 < context.config.simRetries &&
                  context.simAttempt + 1 === Math.ceil(context.config.simRetries / 2),
                target: 'simCycling',
                actions: assign({ simAttempt: ({ context }) => context.simAttempt + 1 }),
              },
              {
                guard: ({ context }) => context.simAttempt + 1 < context.config.simRetries,
                target: 'simWaiting',
                actions: assign({ simAttempt: ({ context }) => context.simAttempt + 1 }),
              },
              {
                target: '#modem.recovering',
                actions: assign(({ event }) => ({
                  reason: 'sim_missing' as const,
                  lastError:
                    event.output === 'failure'
                      ? 'the SIM keeps failing (CME 13)'
                      : event.output === 'busy'
                        ? 'the SIM stays busy (CME 14)'
                        : 'the SIM stays NOT READY',
                })),
              },
            ],
            onError: { target: '#modem.recovering', actions: assign(fail('at_timeout')) },
          },
        },
        simWaiting: { after: { simRetry: 'sim' } },
        simCycling: {
          invoke: { id: 'softReset', src: 'softReset', onDone: 'simWaiting', onError: 'simWaiting' },
        },
        registering: registeringState('#modem.initializing', [], 'no registration in time'),
        connecting: connectingState('boot'),
      },
    },

    online: {
      entry: assign({ rung: 0, reason: null, lastError: null }),
      initial: 'serving',
      on: {
        'urc.rdy': {
          target: 'detecting',
          actions: assign({ lastError: 'RDY while online: the modem reset itself' }),
        },
        // fail closed: a modem whose proxy cannot serve or egresses wrongly stops serving
        'dataplane.failed': {
          target: 'error',
          actions: assign(({ event }) => ({ reason: event.reason, lastError: event.detail.slice(0, 200) })),
        },
        'urc.registration': {
          guard: ({ event }) => !REGISTERED.includes(event.stat),
          target: 'recovering',
          actions: assign(({ event }) => ({
            reason: 'no_service' as const,
            lastError: `registration lost (${event.stat})`,
            registration: event.stat,
          })),
        },
        // the call went down while the modem stays attached: redial it first (rotating and
        // redialing make a new call anyway)
        'call.lost': {
          target: '.redialing',
          actions: assign(({ event }) => ({ lastError: event.detail.slice(0, 200) })),
        },
        // still nothing through the ports after a redial: the recovery ladder
        'call.dead': {
          target: 'recovering',
          actions: assign(({ event }) => ({
            reason: 'no_data_call' as const,
            lastError: event.detail.slice(0, 200),
          })),
        },
      },
      states: {
        serving: {
          after: { signalPoll: 'polling' },
          on: { 'command.rotate': { target: 'rotating', actions: 'startRotation' } },
        },
        polling: {
          invoke: {
            id: 'pollSignal',
            src: 'pollSignal',
            onDone: [
              {
                guard: ({ event }) => !event.output.callUp,
                target: 'redialing',
                actions: [
                  assign({ signal: ({ event }) => event.output.signal, lastError: 'the data call is down' }),
                  { type: 'reportHealth', params: ({ event }) => ({ signal: event.output.signal }) },
                ],
              },
              {
                target: 'serving',
                actions: [
                  assign({ signal: ({ event }) => event.output.signal }),
                  { type: 'reportHealth', params: ({ event }) => ({ signal: event.output.signal }) },
                ],
              },
            ],
            onError: 'serving',
          },
          on: { 'command.rotate': { target: 'rotating', actions: 'startRotation' } },
        },
        redialing: {
          on: {
            'call.lost': {},
            'command.rotate': { target: 'rotating', actions: 'startRotation' },
          },
          invoke: {
            id: 'redial',
            src: 'redial',
            onDone: {
              target: 'serving',
              actions: assign({ wanIp: ({ event }) => event.output.address, lastError: null }),
            },
            onError: [
              { guard: fatal, target: '#modem.error', actions: assign(fail('no_data_call')) },
              { target: '#modem.recovering', actions: assign(fail('no_data_call')) },
            ],
          },
        },
        rotating: {
          on: {
            'urc.registration': {}, // detaching loses registration on purpose
            'call.lost': {}, // so does the call; the rotation makes a new one
            'command.rotate': {
              actions: { type: 'commandFinished', params: ({ event }) => reject(event.id, 'rotate', 'busy') },
            },
          },
          initial: 'detaching',
          states: {
            detaching: {
              invoke: {
                id: 'detach',
                src: 'detach',
                onDone: 'detached',
                onError: {
                  target: '#modem.recovering',
                  actions: [
                    { type: 'commandFinished', params: rotationResult('failed') },
                    'clearRotation',
                    assign(fail('at_timeout')),
                  ],
                },
              },
            },
            detached: { after: { detachTime: 'attaching' } },
            attaching: {
              invoke: {
                id: 'attach',
                src: 'attach',
                onDone: 'registering',
                onError: {
                  target: '#modem.recovering',
                  actions: [
                    { type: 'commandFinished', params: rotationResult('failed') },
                    'clearRotation',
                    assign(fail('at_timeout')),
                  ],
                },
              },
            },
            registering: registeringState(
              '#modem.online.rotating',
              abortRotation,
              'no registration after reattach',
            ),
            connecting: connectingState('rotation'),
          },
        },
      },
    },

    disabling: {
      entry: interruptRotation,
      invoke: {
        id: 'disableRadio',
        src: 'disableRadio',
        onDone: {
          target: 'disabled',
          actions: [{ type: 'commandFinished', params: finished(true) }, 'forgetCommand'],
        },
        onError: {
          target: 'recovering',
          actions: [
            { type: 'commandFinished', params: finished(false) },
            'forgetCommand',
            assign(fail('at_timeout')),
          ],
        },
      },
    },
    disabled: {
      entry: [...interruptRotation, assign({ wanIp: null, registration: null, reason: null })],
      // enabled again while the radio was being switched off: switch it back on
      always: { guard: ({ context }) => context.desired === 'enabled', target: 'enabling' },
      on: {
        'command.enable': {
          target: 'enabling',
          actions: [supersede, 'rememberCommand', assign({ desired: 'enabled' as const })],
        },
        'command.disable': {
          actions: {
            type: 'commandFinished',
            params: ({ event }) => ({
              id: event.id,
              kind: 'disable',
              ok: true,
              result: { already: 'disabled' },
            }),
          },
        },
        'port.lost': {},
        'urc.registration': {},
        // the modem rebooted (and comes up with the radio on): disable it again
        'urc.rdy': { target: 'disabling' },
      },
    },
    enabling: {
      invoke: {
        id: 'attach',
        src: 'attach',
        onDone: {
          target: 'detecting',
          actions: [{ type: 'commandFinished', params: finished(true) }, 'forgetCommand'],
        },
        onError: {
          target: 'recovering',
          actions: [
            { type: 'commandFinished', params: finished(false) },
            'forgetCommand',
            assign(fail('at_timeout')),
          ],
        },
      },
    },

    resetting: {
      entry: interruptRotation,
      // all expected while it re-enumerates: the port goes away and comes back
      on: { 'port.lost': {}, 'urc.registration': {}, 'device.removed': '.gone' },
      initial: 'sending',
      states: {
        sending: {
          invoke: {
            id: 'hardReset',
            src: 'hardReset',
            onDone: {
              target: 'waiting',
              actions: [{ type: 'commandFinished', params: finished(true) }, 'forgetCommand'],
            },
            // the port may already be gone: the reset may have happened all the same
            onError: {
              target: 'waiting',
              actions: [{ type: 'commandFinished', params: finished(false) }, 'forgetCommand'],
            },
          },
        },
        waiting: {
          on: { 'urc.rdy': '#modem.detecting' },
          after: { reenumeration: '#modem.detecting' },
        },
        // the device left the bus: a reset re-enumerates it; if it does not come back it was unplugged
        gone: {
          on: {
            'device.added': 'waiting',
            'device.removed': {},
            'command.reset': { actions: { type: 'commandFinished', params: absent('reset') } },
            'command.disable': { actions: { type: 'commandFinished', params: absent('disable') } },
            'command.enable': { actions: { type: 'commandFinished', params: absent('enable') } },
          },
          after: { reenumeration: '#modem.removed' },
        },
      },
    },

    recovering: {
      entry: [
        ...interruptAll,
        assign({
          // only the window counts, and no more than the limit needs to be kept
          recoveries: ({ context }) =>
            [
              ...context.recoveries.filter((t) => context.now() - t < context.config.recoveryWindowMs),
              context.now(),
            ].slice(-(context.config.maxRecoveries + 1)),
          wanIp: null,
        }),
      ],
      always: {
        guard: 'intensityExceeded',
        target: 'error',
        actions: assign(({ context }) => ({
          reason: 'restart_intensity' as const,
          lastError: `more than ${context.config.maxRecoveries} recoveries in ${context.config.recoveryWindowMs} ms; last: ${context.reason ?? 'unknown'}`,
        })),
      },
      // already recovering: a port that gives up now is part of the fault being recovered
      on: { 'port.lost': {} },
      initial: 'backoff',
      states: {
        backoff: { after: { backoff: 'act' } },
        act: {
          always: [
            {
              guard: ({ context }) => rungNow(context).rung === 'reinit',
              target: '#modem.detecting',
              actions: 'nextRung',
            },
            {
              guard: ({ context }) => rungNow(context).rung === 'softReset',
              target: 'softResetting',
              actions: 'nextRung',
            },
            {
              guard: ({ context }) => rungNow(context).rung === 'hardReset',
              target: '#modem.resetting',
              actions: 'nextRung',
            },
            {
              guard: ({ context }) => rungNow(context).rung === 'usbReset',
              target: 'usbResetting',
              actions: 'nextRung',
            },
            {
              guard: ({ context }) => rungNow(context).rung === 'powerCycle',
              target: 'powerCycling',
              actions: 'nextRung',
            },
            { target: '#modem.error' },
          ],
        },
        softResetting: {
          invoke: {
            id: 'softReset',
            src: 'softReset',
            onDone: '#modem.detecting',
            onError: '#modem.detecting',
          },
        },
        usbResetting: {
          invoke: {
            id: 'usbReset',
            src: 'usbReset',
            onDone: '#modem.resetting.waiting',
            // not permitted, or the device is gone: the next rung
            onError: { target: 'backoff' },
          },
        },
        powerCycling: {
          invoke: {
            id: 'powerCycle',
            src: 'powerCycle',
            onDone: '#modem.resetting.waiting',
            onError: '#modem.error',
          },
        },
      },
    },

    error: {
      entry: [
        ...interruptAll,
        assign(({ context }) => ({
          reason: context.reason ?? ('hardware_fault' as const),
          wanIp: null,
        })),
        {
          type: 'raiseAlert',
          params: ({ context }) => ({
            kind: `modem_${context.reason ?? 'hardware_fault'}`,
            severity: 'critical' as const,
            message: `modem ${context.identity?.imei ?? context.usbPath} gave up: ${context.reason ?? 'hardware_fault'}${context.lastError ? ` (${context.lastError})` : ''}`,
          }),
        },
      ],
      on: {
        'command.reset': { target: 'resetting', actions: [supersede, 'rememberCommand', 'clearRecovery'] },
        'command.enable': {
          target: 'detecting',
          actions: [
            'clearRecovery',
            {
              type: 'commandFinished',
              params: ({ event }) => ({ id: event.id, kind: 'enable' as const, ok: true, result: {} }),
            },
            assign({ desired: 'enabled' as const }),
          ],
        },
        'port.lost': {},
        'urc.rdy': {},
        'urc.registration': {},
      },
    },

    removed: { type: 'final', entry: [...interruptAll, assign({ wanIp: null })] },
  },
});
