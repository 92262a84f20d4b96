import { randomBytes } from 'node:crypto';
import postgres, { type Sql } from 'postgres';
import { silentLogger, type Logger } from '../log.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay, rejectAfter } from '../util/time.js';
import { connectionOptions } from './database.js';
import type { Channel } from './types.js';

export interface Notification {
  channel: Channel;
  payload: Record<string, unknown>;
}

export interface ListenerOptions {
  url: string;
  channels: readonly Channel[];
  onNotification: (notification: Notification) => void;
  /**
   * Runs after the first LISTEN and after every re-LISTEN (reconnect): NOTIFY is only a nudge, the
   * tables are the truth, so whatever was sent while we were not listening is found here.
   * Calls are serialised and coalesced.
   */
  onCatchUp?: () => Promise<void>;
  /** Pool used to send heartbeats (not the listen connection). */
  pingSql: Sql;
  /** How often a heartbeat is sent through the server to the listen connection. */
  heartbeatIntervalMs?: number;
  /** A heartbeat not received within this time means the listen connection is dead: rebuild it. */
  heartbeatTimeoutMs?: number;
  /**
   * A catch-up still running after this long is abandoned (it keeps running, but the next one no
   * longer waits for it). A query on a connection whose server died can stay unanswered, and every
   * later catch-up (notifications, polls) is coalesced into the running one: without this limit,
   * one hung query would stop the commands of this host for good. Default 30 s.
   */
  catchUpTimeoutMs?: number;
  log?: Logger;
}

export interface ListenerStats {
  listens: number;
  reconnects: number;
  rebuilds: number;
  notifications: number;
  malformed: number;
  heartbeatsMissed: number;
  catchUps: number;
  catchUpErrors: number;
}

const HEARTBEAT_CHANNEL = 'modemfleet_heartbeat';
// A journal batch (modem_status_change) fills a payload up to ~7,950 bytes (PostgreSQL refuses 8000);
// every other channel's payloads stay under 1 KB, so anything far larger was not written by us.
const maxPayload = (channel: Channel): number => (channel === 'modem_status_change' ? 8000 : 4096);

/**
 * LISTEN on a dedicated connection with a heartbeat. postgres.js re-LISTENs by itself after a
 * reconnect (we give it a short backoff), but it has no heartbeat: a half-open connection would wait
 * forever. We send a NOTIFY to ourselves through the pool every interval; when it does not come back
 * on the listen connection in time, that connection is thrown away and built anew.
 */
export class Listener {
  readonly stats: ListenerStats = {
    listens: 0,
    reconnects: 0,
    rebuilds: 0,
    notifications: 0,
    malformed: 0,
    heartbeatsMissed: 0,
    catchUps: 0,
    catchUpErrors: 0,
  };
  private readonly options: ListenerOptions;
  private readonly log: Logger;
  private readonly token = randomBytes(6).toString('hex');
  private root: Sql | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pingSeq = 0;
  private pending: { seq: number; sentAt: number } | undefined;
  private catchUpRunning: Promise<void> | undefined;
  private catchUpAgain = false;
  private stopped = true;
  private subscribeAttempt = 0;
  private subscribeTimer: NodeJS.Timeout | undefined;
  private lastHeartbeatAt = 0;

  constructor(options: ListenerOptions) {
    this.options = options;
    this.log = (options.log ?? silentLogger).child({ component: 'listener' });
  }

  /** Time of the last heartbeat seen on the listen connection (0 before the first). */
  get lastHeartbeat(): number {
    return this.lastHeartbeatAt;
  }

  /** Resolves once LISTEN is in place on every channel (and the first catch-up has run). */
  async start(): Promise<void> {
    this.stopped = false;
    this.root = this.makeRoot();
    await this.subscribe(this.root);
    await this.catchUp();
    const interval = this.options.heartbeatIntervalMs ?? 2_000;
    this.timer = setInterval(() => this.beat(), interval);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.subscribeTimer);
    const root = this.root;
    this.root = undefined;
    await root?.end({ timeout: 1 }).catch(() => undefined);
    await this.catchUpRunning;
  }

  /** Run the catch-up now (also used by callers that want to poll). */
  catchUp(): Promise<void> {
    const onCatchUp = this.options.onCatchUp;
    if (!onCatchUp) return Promise.resolve();
    if (this.catchUpRunning) {
      this.catchUpAgain = true;
      return this.catchUpRunning;
    }
    const run = async (): Promise<void> => {
      do {
        this.catchUpAgain = false;
        try {
          this.stats.catchUps++;
          await this.bounded(onCatchUp());
        } catch (err) {
          this.stats.catchUpErrors++;
          this.log.warn(
            { err: coerceError(err) },
            'catch-up failed; it runs again on the next (re)LISTEN or heartbeat',
          );
        }
      } while (this.catchUpAgain && !this.stopped);
    };
    this.catchUpRunning = run().finally(() => {
      this.catchUpRunning = undefined;
    });
    return this.catchUpRunning;
  }

  /** `run`, or a rejection once it has taken longer than `catchUpTimeoutMs`. */
  private bounded(run: Promise<void>): Promise<void> {
    const limitMs = this.options.catchUpTimeoutMs ?? 30_000;
    // the abandoned run may still fail later: nobody waits for it, so its error is only logged
    run.catch((err: unknown) => this.log.debug({ err: coerceError(err) }, 'abandoned catch-up failed'));
    return rejectAfter(run, limitMs, () => new Error(`catch-up unanswered after ${limitMs} ms; abandoned`), {
      unref: true,
    });
  }

  private makeRoot(): Sql {
    return postgres(this.options.url, {
      ...connectionOptions({ max: 1, application: 'modemfleet-listen', url: this.options.url }),
      // postgres.js's default backoff re-LISTENs up to 20 s after the server is back
      backoff: (retries: number) => Math.min(0.05 * 2 ** retries, 1),
    });
  }

  private async subscribe(root: Sql): Promise<void> {
    const onlisten = (channel: Channel): void => {
      this.stats.listens++;
      // every channel is re-LISTENed after a reconnect: count the reconnect once, on the first channel
      if (channel === this.options.channels[0] && this.stats.listens > 1) this.stats.reconnects++;
      if (!this.stopped) void this.catchUp();
    };
    await Promise.all([
      root.listen(HEARTBEAT_CHANNEL, (payload) => this.onHeartbeat(payload)),
      ...this.options.channels.map((channel) =>
        root.listen(
          channel,
          (payload) => this.onPayload(channel, payload),
          () => onlisten(channel),
        ),
      ),
    ]);
    this.subscribeAttempt = 0;
  }

  private onPayload(channel: Channel, payload: string): void {
    if (payload.length > maxPayload(channel)) {
      this.stats.malformed++;
      this.log.warn({ channel, bytes: payload.length }, 'oversized notification ignored');
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(payload);
    } catch {
      parsed = undefined;
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
      this.stats.malformed++;
      this.log.warn(
        { channel, notification: { payload: payload.slice(0, 200) } },
        'malformed notification ignored',
      );
      return;
    }
    this.stats.notifications++;
    try {
      this.options.onNotification({ channel, payload: parsed as Record<string, unknown> });
    } catch (err) {
      this.log.error({ err: coerceError(err), channel }, 'notification handler failed');
    }
  }

  private onHeartbeat(payload: string): void {
    const [token, seq] = payload.split(':');
    if (token !== this.token || this.pending === undefined || Number(seq) !== this.pending.seq) return;
    this.pending = undefined;
    this.lastHeartbeatAt = Date.now();
  }

  private beat(): void {
    if (this.stopped) return;
    const timeout = this.options.heartbeatTimeoutMs ?? 10_000;
    if (this.pending && Date.now() - this.pending.sentAt > timeout) {
      this.stats.heartbeatsMissed++;
      this.log.warn(
        { waitedMs: Date.now() - this.pending.sentAt },
        'listen connection missed its heartbeat; rebuilding it',
      );
      this.pending = undefined;
      this.rebuild();
      return;
    }
    if (this.pending) return;
    const seq = ++this.pingSeq;
    this.pending = { seq, sentAt: Date.now() };
    this.options.pingSql`select pg_notify(${HEARTBEAT_CHANNEL}, ${`${this.token}:${seq}`})`.then(
      () => undefined,
      (err: unknown) => {
        // Only a heartbeat that reached the server can be missed by the listen connection.
        if (this.pending?.seq === seq) this.pending = undefined;
        this.log.debug({ err: coerceError(err) }, 'heartbeat not sent (database unreachable)');
      },
    );
  }

  private rebuild(): void {
    if (this.stopped) return;
    this.stats.rebuilds++;
    const old = this.root;
    const root = this.makeRoot();
    this.root = root;
    void old?.end({ timeout: 0 }).catch(() => undefined);
    const attempt = (): void => {
      if (this.stopped || this.root !== root) return;
      this.subscribe(root).then(
        () => undefined,
        (err: unknown) => {
          const delay = backoffDelay(this.subscribeAttempt++, 100, 2_000, 0.2);
          this.log.warn({ err: coerceError(err), delayMs: delay }, 'LISTEN failed; retrying');
          this.subscribeTimer = setTimeout(attempt, delay);
        },
      );
    };
    attempt();
  }
}
