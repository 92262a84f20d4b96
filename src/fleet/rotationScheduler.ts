import { silentLogger, type Logger } from '../log.js';
import type { Store } from '../store/store.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { planTick, type RotationSchedule, type ScheduleMemory } from './rotationSchedule.js';

export interface RotationSchedulerOptions {
  store: Pick<Store, 'scheduleFacts' | 'insertCommand' | 'recordSkippedRotation'>;
  /** The farm default (config `rotation.schedule`) for modems without their own schedule. */
  farmDefault?: RotationSchedule | undefined;
  /** Schedules are re-read at least this often (policy `rotationSchedulePollMs`). */
  pollMs: number;
  log?: Logger;
  /** Uniform in [0, 1); tests pass a seeded one. */
  random?: () => number;
}

/**
 * Scheduled rotation on this host: every tick reads the schedules of this host's modems with their
 * last rotation (the database's clock), lets `planTick` decide, and queues a rotate (`requested_by`
 * `schedule`) through the normal command path for each online modem that is due; the per-modem
 * command queue and the one-pending-rotate rule keep a modem from ever rotating twice at once. A due
 * modem that is not online is skipped and recorded (a rotate row failed with `not_online`). The next
 * tick comes at the earliest due time or after `pollMs`, whichever is first, so a schedule changed
 * through the API or the CLI takes effect within `pollMs` without a restart.
 */
export class RotationScheduler {
  private readonly memory: ScheduleMemory = new Map();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  /** When this scheduler first read the schedules (the database's clock): the farm default's start. */
  private startedMs: number | undefined;
  private stopped = true;
  private readonly log: Logger;

  constructor(private readonly options: RotationSchedulerOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'scheduler' });
  }

  start(): void {
    this.stopped = false;
    this.arm(0);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Read the schedules now (a change was made here); otherwise the poll finds it. */
  poke(): void {
    if (!this.stopped && !this.running) this.arm(0);
  }

  private arm(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.tick().finally(() => (this.running = undefined));
    }, delayMs);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    let delayMs = this.options.pollMs;
    try {
      const { farmDefault } = this.options;
      const { nowMs, facts } = await this.options.store.scheduleFacts(farmDefault !== undefined);
      this.startedMs ??= nowMs;
      const plan = planTick(this.memory, facts, nowMs, {
        farmDefault,
        startedMs: this.startedMs,
        random: this.options.random ?? Math.random,
      });
      for (const imei of plan.rotate) {
        if (this.stopped) return;
        let id: number;
        try {
          id = await this.options.store.insertCommand(imei, 'rotate', 'schedule');
        } catch (err) {
          // a modem whose queue is full (an operator's commands) skips this one; the others go on
          if (!(err instanceof ModemfleetError && err.code === 'queue_full')) throw err;
          this.log.warn({ modem: imei }, 'scheduled rotation not queued: the queue is full');
          continue;
        }
        this.log.info({ modem: imei, command: { id } }, 'scheduled rotation queued');
      }
      for (const { imei, state } of plan.skip) {
        if (this.stopped) return;
        const id = await this.options.store.recordSkippedRotation(imei, state);
        this.log.warn({ modem: imei, state, command: { id } }, 'scheduled rotation skipped: not online');
      }
      // what was queued or skipped changes the facts: read them again soon rather than at the poll
      if (plan.rotate.length || plan.skip.length) delayMs = Math.min(delayMs, 1_000);
      if (plan.nextDueMs !== undefined) delayMs = Math.min(delayMs, Math.max(10, plan.nextDueMs - nowMs));
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'rotation schedules not read; retrying');
    }
    if (!this.stopped) this.arm(delayMs);
  }
}
