import type { Logger } from '../log.js';

export interface ShutdownSignal {
  /** Resolves with the first SIGINT or SIGTERM. */
  received: Promise<NodeJS.Signals>;
  /** Removes the handlers (after a graceful shutdown has finished). */
  dispose(): void;
}

/**
 * The first SIGINT/SIGTERM asks for a graceful shutdown; a second one exits at once. The handlers
 * stay installed until `dispose()`: with a `once` handler, execa's signal-exit (used for its child
 * cleanup) would see no other listener and re-raise the signal, killing the process mid-shutdown.
 */
export function shutdownSignal(log?: Logger): ShutdownSignal {
  let count = 0;
  let resolve: (signal: NodeJS.Signals) => void = () => undefined;
  const received = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const handler = (signal: NodeJS.Signals): void => {
    count++;
    if (count === 1) {
      log?.info({ signal }, 'shutting down; send the signal again to force');
      resolve(signal);
      return;
    }
    log?.warn({ signal }, 'second signal: exiting without a graceful shutdown');
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    received,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
