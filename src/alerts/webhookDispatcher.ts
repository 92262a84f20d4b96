import { silentLogger, type Logger } from '../log.js';
import { DEFAULT_POLICY, type Policy } from '../policy.js';
import type { Listener } from '../store/listener.js';
import type { Store } from '../store/store.js';
import type { DeliveryJob } from '../store/deliveries.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay, sleep } from '../util/time.js';
import { sendDelivery, type SendLimits, type SendResult } from './webhookSender.js';

export interface WebhookPolicy extends SendLimits {
  /** Backoff between attempts of one delivery: from base, doubling, capped. */
  retryBaseMs: number;
  retryCapMs: number;
  /** A delivery is given up (`failed`) after this many attempts. */
  maxAttempts: number;
  /** Safety net: due deliveries are looked for this often whatever NOTIFY did. */
  pollMs: number;
  /** Deliveries sent at once by this host (to different webhooks). */
  concurrency: number;
}

export const DEFAULT_WEBHOOK_POLICY: WebhookPolicy = webhookPolicy(DEFAULT_POLICY);

/** The dispatcher's part of the fleet policy (config `policy.webhook*`). */
export function webhookPolicy(p: Policy): WebhookPolicy {
  return {
    timeoutMs: p.webhookTimeoutMs,
    responseBytes: 1_024,
    retryBaseMs: p.webhookRetryBaseMs,
    retryCapMs: p.webhookRetryCapMs,
    maxAttempts: p.webhookMaxAttempts,
    pollMs: p.webhookPollMs,
    concurrency: 4,
  };
}

export interface WebhookDispatcherOptions {
  store: Store;
  policy?: Partial<WebhookPolicy>;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  log?: Logger;
}

/** Backoff before attempt `attempts + 1`, or null when the delivery is given up. */
export function retryIn(policy: WebhookPolicy, attempts: number): number | null {
  return attempts >= policy.maxAttempts
    ? null
    : backoffDelay(attempts - 1, policy.retryBaseMs, policy.retryCapMs);
}

/**
 * Push alerts, one per host. The alert's own transaction queued a delivery row per matching webhook
 * (sql/0012); NOTIFY on `modem_alerts` wakes us, a timer wakes us when the first retry is due and a
 * poll is the safety net. Deliveries are claimed through the database (each is sent by one host of
 * the farm), sent, and their outcome written (retried while the database is away).
 */
export class WebhookDispatcher {
  readonly stats = { sent: 0, delivered: 0, failed: 0 };
  private readonly policy: WebhookPolicy;
  private readonly log: Logger;
  private listener: Listener | undefined;
  private poll: NodeJS.Timeout | undefined;
  private dueTimer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private stopped = true;

  constructor(private readonly options: WebhookDispatcherOptions) {
    this.policy = { ...DEFAULT_WEBHOOK_POLICY, ...options.policy };
    this.log = (options.log ?? silentLogger).child({ component: 'webhooks' });
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.listener = await this.options.store.listen(['modem_alerts'], () => this.wake(), {
      onCatchUp: () => this.catchUp(),
      ...(this.options.heartbeatIntervalMs ? { heartbeatIntervalMs: this.options.heartbeatIntervalMs } : {}),
      ...(this.options.heartbeatTimeoutMs ? { heartbeatTimeoutMs: this.options.heartbeatTimeoutMs } : {}),
    });
    this.poll = setInterval(() => this.wake(), this.policy.pollMs);
    this.poll.unref();
  }

  /** Stop claiming; sends under way finish (bounded by the request timeout) and are recorded. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.poll);
    clearTimeout(this.dueTimer);
    await this.listener?.stop();
    await Promise.allSettled([...this.inFlight]);
  }

  wake(): void {
    if (!this.stopped) void this.listener?.catchUp();
  }

  private get staleSeconds(): number {
    return Math.ceil((this.policy.timeoutMs * 2 + 30_000) / 1000);
  }

  private async catchUp(): Promise<void> {
    while (!this.stopped) {
      const room = this.policy.concurrency - this.inFlight.size;
      if (room <= 0) return; // a finished send wakes us
      const jobs = await this.options.store.claimDeliveries(room, this.staleSeconds);
      if (jobs.length === 0) break;
      for (const job of jobs) this.launch(job);
    }
    const dueMs = await this.options.store.nextDeliveryDueMs();
    clearTimeout(this.dueTimer);
    if (dueMs === undefined || this.stopped) return;
    this.dueTimer = setTimeout(() => this.wake(), Math.max(dueMs, 5) + 5);
    this.dueTimer.unref();
  }

  private launch(job: DeliveryJob): void {
    const run = this.deliver(job).finally(() => {
      this.inFlight.delete(run);
      this.wake(); // the webhook's next delivery may go now
    });
    this.inFlight.add(run);
  }

  private async deliver(job: DeliveryJob): Promise<void> {
    const result = await sendDelivery(job, this.policy);
    this.stats.sent++;
    const retryInMs = result.ok ? null : retryIn(this.policy, job.attempts);
    if (result.ok) this.stats.delivered++;
    else if (retryInMs === null) this.stats.failed++;
    const line = {
      delivery: { id: job.id, attempts: job.attempts, webhook: job.event.webhook },
      status: result.status,
    };
    if (result.ok) this.log.debug(line, 'webhook delivered');
    else if (retryInMs === null)
      this.log.error({ ...line, error: result.error }, 'webhook delivery given up');
    else this.log.warn({ ...line, error: result.error, retryInMs }, 'webhook delivery failed; retrying');
    await this.record(job, result, retryInMs);
  }

  /** The outcome, written until it is (a stale claim is released after `staleSeconds` anyway). */
  private async record(job: DeliveryJob, result: SendResult, retryInMs: number | null): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.options.store.finishDelivery(job.id, { ...result, retryInMs });
        return;
      } catch (err) {
        if (this.stopped && attempt > 0) {
          this.log.error({ err: coerceError(err), delivery: { id: job.id } }, 'webhook outcome not recorded');
          return;
        }
        this.log.warn(
          { err: coerceError(err), delivery: { id: job.id } },
          'webhook outcome not recorded yet',
        );
        await sleep(backoffDelay(attempt, 250, 5_000, 0.2));
      }
    }
  }
}
