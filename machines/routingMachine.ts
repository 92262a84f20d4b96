import { assign, fromPromise, setup } from 'xstate';

/**
 * One modem's policy routing: applied when the modem has an address, verified by reading it back,
 * re-applied after a link change, a new address (rotation: the old address goes) or a failed
 * verification, and removed when the modem goes. Failures are retried with backoff and reported;
 * the fail-closed blackhole stays in place meanwhile. Routing a previous run left in place (its
 * proxy is being adopted) is verified first and applied only when it is not right: applying deletes
 * and re-adds the modem's rule, a moment in which its open connections' packets would find no rule.
 * Pure: effects supplied by src/net.
 */

export interface RoutingConfig {
  backoffBaseMs: number;
  backoffCapMs: number;
  /** How often the applied routing is read back and compared. */
  verifyIntervalMs: number;
}

export const DEFAULT_ROUTING_CONFIG: RoutingConfig = {
  backoffBaseMs: 200,
  backoffCapMs: 10_000,
  verifyIntervalMs: 30_000,
};

export interface RoutingContext {
  config: RoutingConfig;
  address: string;
  /** The address to take off the link on the next apply (after a rotation). */
  previousAddress: string | null;
  attempt: number;
  lastError: string | null;
  /** Read back before the first apply (a previous run's routing, handed over). */
  verifyFirst: boolean;
}

export type RoutingEvent =
  | { type: 'address.changed'; address: string }
  /** The link went down/up (its routes were flushed) or was re-created. */
  | { type: 'link.changed' }
  | { type: 'remove' };

export interface RoutingInput {
  address: string;
  config?: Partial<RoutingConfig>;
  /** The routing may already be in place (left by a previous run): verify it before applying. */
  verifyFirst?: boolean;
}

const notProvided = (name: string) => () => Promise.reject(new Error(`effect ${name} not provided`));

export const routingMachine = setup({
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- xstate's typing pattern
  types: {} as { context: RoutingContext; events: RoutingEvent; input: RoutingInput },
  actors: {
    applyRouting: fromPromise<void, { address: string; previousAddress: string | null }>(
      notProvided('applyRouting'),
    ),
    /** Resolves with the problems found (empty: as applied). */
    verifyRouting: fromPromise<string[], { address: string }>(notProvided('verifyRouting')),
    removeRouting: fromPromise<void>(notProvided('removeRouting')),
  },
  actions: {
    /** Reported to the modem: `ok` false while routing is not as it should be. */
    routingStatus: (_args, _params: { ok: boolean; detail: string | null }) => {},
  },
  delays: {
    backoff: ({ context }) =>
      Math.min(context.config.backoffCapMs, context.config.backoffBaseMs * 2 ** context.attempt),
    verifyInterval: ({ context }) => context.config.verifyIntervalMs,
  },
}).createMachine({
  id: 'routing',
  context: ({ input }) => ({
    config: { ...DEFAULT_ROUTING_CONFIG, ...input.config },
    address: input.address,
    previousAddress: null,
    attempt: 0,
    lastError: null,
    verifyFirst: input.verifyFirst ?? false,
  }),
  initial: 'starting',
  on: {
    remove: '.removing',
    'address.changed': {
      target: '.applying',
      actions: assign(({ context, event }) => ({
        previousAddress: context.previousAddress ?? context.address,
        address: event.address,
        verifyFirst: false,
      })),
    },
    'link.changed': { target: '.applying', actions: assign({ verifyFirst: false }) },
  },
  states: {
    starting: {
      always: [{ guard: ({ context }) => context.verifyFirst, target: 'verifying' }, { target: 'applying' }],
    },
    applying: {
      invoke: {
        src: 'applyRouting',
        input: ({ context }) => ({ address: context.address, previousAddress: context.previousAddress }),
        onDone: { target: 'verifying', actions: assign({ previousAddress: null }) },
        onError: {
          target: 'retrying',
          actions: assign({ lastError: ({ event }) => String((event.error as Error).message).slice(0, 300) }),
        },
      },
    },
    verifying: {
      invoke: {
        src: 'verifyRouting',
        input: ({ context }) => ({ address: context.address }),
        onDone: [
          {
            guard: ({ event }) => event.output.length === 0,
            target: 'applied',
            actions: [
              assign({ attempt: 0, lastError: null, verifyFirst: false }),
              { type: 'routingStatus', params: { ok: true, detail: null } },
            ],
          },
          // the left routing is not right: applied now, as on any bring-up (not a problem yet)
          {
            guard: ({ context }) => context.verifyFirst,
            target: 'applying',
            actions: assign({ verifyFirst: false }),
          },
          {
            target: 'retrying',
            actions: assign({ lastError: ({ event }) => event.output.join('; ').slice(0, 300) }),
          },
        ],
        onError: [
          {
            guard: ({ context }) => context.verifyFirst,
            target: 'applying',
            actions: assign({ verifyFirst: false }),
          },
          {
            target: 'retrying',
            actions: assign({
              lastError: ({ event }) => String((event.error as Error).message).slice(0, 300),
            }),
          },
        ],
      },
    },
    applied: {
      after: { verifyInterval: 'verifying' },
    },
    retrying: {
      entry: { type: 'routingStatus', params: ({ context }) => ({ ok: false, detail: context.lastError }) },
      after: { backoff: 'applying' },
      exit: assign({ attempt: ({ context }) => context.attempt + 1 }),
    },
    removing: {
      invoke: { src: 'removeRouting', onDone: 'removed', onError: 'removed' },
      on: { 'address.changed': {}, 'link.changed': {}, remove: {} },
    },
    removed: { type: 'final' },
  },
});
