import { assign, fromPromise, setup } from 'xstate';

/**
 * One modem's proxy process: started when the modem has an address, ready only when its ports
 * accept connections, reloaded when the address changes (3proxy re-reads its config on SIGUSR1;
 * backends without reload are restarted), restarted with exponential backoff when it exits, under
 * restart intensity (more than `maxRestarts` in `restartWindowMs` → `failed`, which the modem
 * reports). New credentials replace the process (even 3proxy: a reload would let connections opened
 * with the old password live on), also one that was starting or reloading when they came
 * (`credentialsStale`): no process keeps the old ones. Pure: the effects are named here and supplied
 * by src/net.
 */

export interface ProxyConfig {
  backoffBaseMs: number;
  backoffCapMs: number;
  maxRestarts: number;
  restartWindowMs: number;
  /** The backend re-reads its configuration on a signal (3proxy); otherwise it is restarted. */
  canReload: boolean;
  /** Running this long without an exit resets the backoff (a crash loop keeps growing it). */
  stableMs: number;
}

export const DEFAULT_PROXY_CONFIG: ProxyConfig = {
  backoffBaseMs: 200,
  backoffCapMs: 10_000,
  maxRestarts: 5,
  restartWindowMs: 60_000,
  canReload: true,
  stableMs: 30_000,
};

export interface ProxyContext {
  config: ProxyConfig;
  now: () => number;
  egress: string;
  restarts: number[];
  attempt: number;
  lastError: string | null;
  /** Credentials changed after the running process (or the one starting) read them. */
  credentialsStale: boolean;
}

export type ProxyEvent =
  /** The process exited (crash, kill); src watches it. */
  | { type: 'proxy.exited'; detail: string }
  /** The modem's address changed (rotation). */
  | { type: 'egress.changed'; egress: string }
  /** The proxy's password changed: the process must not serve the old one any more. */
  | { type: 'credentials.changed' }
  | { type: 'stop' };

export interface ProxyInput {
  egress: string;
  config?: Partial<ProxyConfig>;
  now?: () => number;
}

const notProvided = (name: string) => () => Promise.reject(new Error(`effect ${name} not provided`));

export function proxyBackoff(context: Pick<ProxyContext, 'config' | 'attempt'>): number {
  return Math.min(context.config.backoffCapMs, context.config.backoffBaseMs * 2 ** context.attempt);
}

export const proxyMachine = setup({
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- xstate's typing pattern
  types: {} as { context: ProxyContext; events: ProxyEvent; input: ProxyInput },
  actors: {
    /** Writes the config, starts the process, resolves when every port accepts connections. */
    startProxy: fromPromise<void, { egress: string }>(notProvided('startProxy')),
    /** New egress address for a running process (SIGUSR1 after rewriting the config). */
    reloadProxy: fromPromise<void, { egress: string }>(notProvided('reloadProxy')),
    /** SIGTERM, then SIGKILL after a timeout; removes the pid file. */
    stopProxy: fromPromise<void>(notProvided('stopProxy')),
  },
  actions: {
    /** Reported to the modem (no-op until provided). */
    proxyFailed: (_args, _params: { detail: string }) => {},
  },
  delays: {
    backoff: ({ context }) => proxyBackoff(context),
    stable: ({ context }) => context.config.stableMs,
  },
  guards: {
    credentialsStale: ({ context }) => context.credentialsStale,
    intensityExceeded: ({ context }) => context.restarts.length > context.config.maxRestarts,
  },
}).createMachine({
  id: 'proxy',
  context: ({ input }) => ({
    config: { ...DEFAULT_PROXY_CONFIG, ...input.config },
    now: input.now ?? Date.now,
    egress: input.egress,
    restarts: [],
    attempt: 0,
    lastError: null,
    credentialsStale: false,
  }),
  initial: 'starting',
  on: {
    stop: '.stopping',
    'egress.changed': { actions: assign({ egress: ({ event }) => event.egress }) },
    'credentials.changed': { actions: assign({ credentialsStale: true }) },
  },
  states: {
    starting: {
      // the process started now reads the credentials current at its start
      entry: assign({ credentialsStale: false }),
      invoke: {
        src: 'startProxy',
        input: ({ context }) => ({ egress: context.egress }),
        onDone: [{ guard: 'credentialsStale', target: 'replacing' }, { target: 'running' }],
        onError: {
          target: 'restarting',
          actions: assign({ lastError: ({ event }) => String((event.error as Error).message).slice(0, 300) }),
        },
      },
    },
    running: {
      after: { stable: { actions: assign({ attempt: 0, lastError: null }) } },
      on: {
        'proxy.exited': {
          target: 'restarting',
          actions: assign({ lastError: ({ event }) => event.detail.slice(0, 300) }),
        },
        'egress.changed': [
          {
            guard: ({ context }) => context.config.canReload,
            target: 'reloading',
            actions: assign({ egress: ({ event }) => event.egress }),
          },
          { target: 'replacing', actions: assign({ egress: ({ event }) => event.egress }) },
        ],
        'credentials.changed': 'replacing',
      },
    },
    reloading: {
      invoke: {
        src: 'reloadProxy',
        input: ({ context }) => ({ egress: context.egress }),
        onDone: [{ guard: 'credentialsStale', target: 'replacing' }, { target: 'running' }],
        onError: 'replacing',
      },
      on: { 'proxy.exited': 'restarting' },
    },
    /** A backend without reload (or new credentials): stopped and started again. */
    replacing: {
      invoke: { src: 'stopProxy', onDone: 'starting', onError: 'starting' },
    },
    restarting: {
      entry: assign(({ context }) => ({
        restarts: [
          ...context.restarts.filter((t) => context.now() - t < context.config.restartWindowMs),
          context.now(),
        ].slice(-(context.config.maxRestarts + 1)),
      })),
      always: {
        guard: 'intensityExceeded',
        target: 'failed',
      },
      initial: 'cleaning',
      states: {
        // whatever is left of the old process goes first (its port would be shared otherwise)
        cleaning: { invoke: { src: 'stopProxy', onDone: 'backoff', onError: 'backoff' } },
        backoff: {
          after: { backoff: '#proxy.starting' },
          exit: assign({ attempt: ({ context }) => context.attempt + 1 }),
        },
      },
    },
    failed: {
      entry: {
        type: 'proxyFailed',
        params: ({ context }) => ({
          detail: `the proxy restarted more than ${context.config.maxRestarts} times in ${context.config.restartWindowMs} ms; last: ${context.lastError ?? 'unknown'}`,
        }),
      },
      invoke: { src: 'stopProxy', onError: { actions: () => {} } },
      on: { 'proxy.exited': {}, 'egress.changed': {}, 'credentials.changed': {} },
    },
    stopping: {
      invoke: { src: 'stopProxy', onDone: 'stopped', onError: 'stopped' },
      on: { 'proxy.exited': {}, stop: {} },
    },
    stopped: { type: 'final' },
  },
});
