import { Histogram } from 'prom-client';
import { silentLogger, type Logger } from '../log.js';
import type { Listener } from '../store/listener.js';
import type { Store } from '../store/store.js';
import type { Command } from '../store/types.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay } from '../util/time.js';

import type { CommandOutcome } from './events.js';

export type { CommandOutcome };

export interface CommandProcessorOptions {
  store: Store;
  /** Carries out one command; resolves with its outcome (never rejects on a failed command). */
  execute: (command: Command) => Promise<CommandOutcome>;
  log?: Logger;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  /** Safety net: a catch-up also runs at this interval, whatever NOTIFY did. */
  pollIntervalMs?: number;
  /** A rotate waits this long after the modem's last rotation (policy `rotationMinIntervalMs`). */
  rotationMinIntervalMs?: number;
  /** A host silent this long is gone (policy `hostDeadAfterMs`): its running commands are abandoned. */
  hostDeadAfterMs?: number;
}

export interface CommandStats {
  claimed: number;
  finished: number;
  failed: number;
  /** Claim-to-finish latency of the last command, ms. */
  lastLatencyMs: number;
  /**
   * Insert-to-finish latency of every command carried out here, seconds (`/metrics` shows it: the
   * inspector registers it in its registry).
   */
  latency: Histogram;
}

/** Command latencies: 50 ms to 5 minutes. */
export const COMMAND_LATENCY_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300] as const;

/** A command latency histogram of one processor, in no registry (not prom-client's global one). */
export const commandLatencyHistogram = (): Histogram =>
  new Histogram({
    name: 'modemfleet_command_duration_seconds',
    help: 'From a command inserted to its result written.',
    buckets: [...COMMAND_LATENCY_BUCKETS],
    registers: [],
  });

/**
 * Operator commands: NOTIFY on `modem_commands` only wakes us; the catch-up after every
 * (re)LISTEN, every notification and every poll claims what is pending for this host's modems
 * (`FOR UPDATE SKIP LOCKED`, one running per modem), runs it, and writes the result back. A result
 * that cannot be written (database away) is retried until it is: each command is finished once.
 */
export class CommandProcessor {
  readonly stats: CommandStats = {
    claimed: 0,
    finished: 0,
    failed: 0,
    lastLatencyMs: 0,
    latency: commandLatencyHistogram(),
  };
  private listener: Listener | undefined;
  private poll: NodeJS.Timeout | undefined;
  /** The abandoned-command sweep runs on the first catch-up and then once per poll. */
  private sweepDue = true;
  private readonly inFlight = new Set<Promise<void>>();
  /** Ids of the commands being carried out by this process. */
  private readonly running = new Set<number>();
  private readonly unsent = new Map<number, CommandOutcome>();
  private retryTimer: NodeJS.Timeout | undefined;
  /** Wakes the catch-up when the first rotate held back by the minimum interval is allowed. */
  private rotationTimer: NodeJS.Timeout | undefined;
  private retryAttempt = 0;
  private stopped = true;
  private readonly log: Logger;

  constructor(private readonly options: CommandProcessorOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'commands' });
  }

  get listenerStats(): Listener['stats'] | undefined {
    return this.listener?.stats;
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.listener = await this.options.store.listen(['modem_commands'], () => this.wake(), {
      onCatchUp: () => this.catchUp(),
      ...(this.options.heartbeatIntervalMs ? { heartbeatIntervalMs: this.options.heartbeatIntervalMs } : {}),
      ...(this.options.heartbeatTimeoutMs ? { heartbeatTimeoutMs: this.options.heartbeatTimeoutMs } : {}),
    });
    this.poll = setInterval(() => {
      this.sweepDue = true;
      this.wake();
    }, this.options.pollIntervalMs ?? 30_000);
    this.poll.unref();
  }

  /** Stop claiming; wait for running commands and try once more to write their results. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.poll);
    clearTimeout(this.retryTimer);
    clearTimeout(this.rotationTimer);
    await this.listener?.stop();
    await Promise.allSettled([...this.inFlight]);
    await this.writeUnsent();
  }

  /** Ask for a catch-up now (a notification, a finished command, a poll). */
  wake(): void {
    if (!this.stopped) void this.listener?.catchUp();
  }

  private async catchUp(): Promise<void> {
    await this.writeUnsent();
    // a command left running by a host that is gone (or inserted as running by hand) would block
    // its modem's queue forever; hosts count as gone after `hostDeadAfterMs`, so once per poll is
    // enough (not on every notification and finished command)
    if (this.sweepDue) {
      const abandoned = await this.options.store.failAbandonedCommands(
        (this.options.hostDeadAfterMs ?? 60_000) / 1000,
      );
      this.sweepDue = false;
      if (abandoned.length)
        this.log.warn({ commands: abandoned }, 'commands left running by a host that is not running failed');
    }
    for (;;) {
      if (this.stopped) return;
      const claimed = await this.options.store.claimCommands(undefined, this.rotationMinIntervalMs);
      if (claimed.length === 0) break;
      this.stats.claimed += claimed.length;
      for (const command of claimed) this.launch(command);
    }
    await this.wakeForWaitingRotation();
    // A claim whose reply was lost (the connection dropped after the commit) left commands running
    // in our name that we never saw: adopt them, or they would stay `running` forever.
    for (const command of await this.options.store.runningCommands()) {
      if (this.running.has(command.id) || this.unsent.has(command.id) || this.stopped) continue;
      // The listing can be stale: a command that finished here while it was read (slow during an
      // outage) is gone from memory but still listed. Memory is cleared only after the result is
      // stored, so a fresh read tells the two apart (the reliability suite caught a double run).
      if (!(await this.options.store.stillRunning(command.id))) continue;
      if (this.running.has(command.id) || this.unsent.has(command.id) || this.stopped) continue;
      this.log.warn(
        { command: { id: command.id, imei: command.imei, kind: command.kind } },
        'adopting a command whose claim reply was lost',
      );
      this.stats.claimed++;
      this.launch(command);
    }
  }

  private get rotationMinIntervalMs(): number {
    return this.options.rotationMinIntervalMs ?? 0;
  }

  /** A rotate held back by the minimum interval is claimed when it is allowed, not at the next poll. */
  private async wakeForWaitingRotation(): Promise<void> {
    const waitMs = await this.options.store.rotationWaitMs(this.rotationMinIntervalMs);
    clearTimeout(this.rotationTimer);
    this.rotationTimer = undefined;
    if (waitMs === undefined || this.stopped) return;
    this.rotationTimer = setTimeout(() => {
      this.rotationTimer = undefined;
      this.wake();
    }, waitMs + 10);
    this.rotationTimer.unref();
  }

  private launch(command: Command): void {
    this.running.add(command.id);
    const run = this.run(command).finally(() => {
      this.inFlight.delete(run);
      this.running.delete(command.id);
    });
    this.inFlight.add(run);
  }

  private async run(command: Command): Promise<void> {
    const started = Date.now();
    let outcome: CommandOutcome;
    try {
      outcome = await this.options.execute(command);
    } catch (err) {
      outcome = { ok: false, result: { error: 'internal', message: coerceError(err).message } };
    }
    this.stats.lastLatencyMs = Date.now() - started;
    const seconds = (Date.now() - command.requestedAt.getTime()) / 1000;
    // the insert time is the database's clock: a skewed one is no latency
    if (Number.isFinite(seconds) && seconds >= 0) this.stats.latency.observe(seconds);
    if (outcome.ok) this.stats.finished++;
    else this.stats.failed++;
    this.log.info(
      { command: { id: command.id, imei: command.imei, kind: command.kind }, ok: outcome.ok },
      'command finished',
    );
    this.unsent.set(command.id, outcome);
    await this.writeUnsent();
    this.wake(); // the modem's next command may be claimed now
  }

  private async writeUnsent(): Promise<void> {
    for (const [id, outcome] of [...this.unsent]) {
      try {
        await this.options.store.finishCommand(id, outcome.ok, outcome.result);
        this.unsent.delete(id);
        this.retryAttempt = 0;
      } catch (err) {
        this.log.warn({ err: coerceError(err), command: { id } }, 'command result not written yet; retrying');
        if (!this.retryTimer && !this.stopped) {
          this.retryTimer = setTimeout(
            () => {
              this.retryTimer = undefined;
              void this.writeUnsent();
            },
            backoffDelay(this.retryAttempt++, 250, 5_000, 0.2),
          );
        }
        return;
      }
    }
  }
}
