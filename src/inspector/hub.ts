import type { WebSocket } from 'ws';
import { silentLogger, type Logger } from '../log.js';
import type { Listener, Notification } from '../store/listener.js';
import type { StoredAlert } from '../store/history.js';
import type { Store } from '../store/store.js';
import type { Channel } from '../store/types.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay } from '../util/time.js';
import type { ModemGaugeRow, ModemView } from '../store/modems.js';
import {
  CONFIG_ADMIN,
  sees,
  seesPasswords,
  viewAlerts,
  viewMessage,
  viewModem,
  type Access,
} from './access.js';
import {
  messagesOf,
  parseClientMessage,
  revokedTokenId,
  touchedImei,
  type ServerMessage,
} from './protocol.js';

export interface HubLimits {
  /** Above this many bytes waiting for a client, its updates stop (coalesced into one resync). */
  clientBufferBytes: number;
  /** A client behind for longer than this is disconnected. */
  clientStallMs: number;
  /** Updates kept for a client while its snapshot is read; more → a second snapshot instead. */
  pendingMessages: number;
  /** Ping interval; a client that has not answered the previous ping is disconnected. */
  pingIntervalMs: number;
  /** Changed modems' rows are re-read and sent at most this often. */
  rowRefreshMs: number;
  /** Malformed client messages tolerated before the client is disconnected. */
  badMessages: number;
  /**
   * The modems' rows kept in memory (snapshots are made from them) are read whole again when a
   * snapshot is asked for this long after the last whole read: a safety net for a change that
   * notified nothing (notifications keep them current; a re-LISTEN drops them).
   */
  rowCacheMaxAgeMs: number;
  /**
   * The rows are kept current only while they are used: a WebSocket client connected, or a
   * snapshot, listing or scrape within this long. Past it, the next notification drops them (no
   * re-reads for an inspector nobody looks at) and the next use reads them whole.
   */
  rowCacheIdleMs: number;
}

export const DEFAULT_HUB_LIMITS: HubLimits = {
  clientBufferBytes: 1024 * 1024,
  clientStallMs: 30_000,
  pendingMessages: 5_000,
  pingIntervalMs: 15_000,
  rowRefreshMs: 100,
  badMessages: 20,
  rowCacheMaxAgeMs: 300_000,
  rowCacheIdleMs: 300_000,
};

export interface HubStats {
  clients: number;
  connections: number;
  notifications: number;
  malformedNotifications: number;
  messagesSent: number;
  messagesDropped: number;
  snapshots: number;
  /** Snapshots serialised (once per view and version; the other snapshots shared their bytes). */
  snapshotSerialisations: number;
  snapshotErrors: number;
  /** Whole reads of every modem's row (a snapshot is made from the rows in memory otherwise). */
  rowCacheReads: number;
  /** The rows in memory dropped because nothing used them for `rowCacheIdleMs`. */
  rowCacheDrops: number;
  slowClients: number;
  resyncs: number;
  disconnectedStalled: number;
  disconnectedUnresponsive: number;
  maxBufferedBytes: number;
}

const CHANNELS: readonly Channel[] = [
  'modem_status_change',
  'modem_health',
  'modem_config_change',
  'modem_alerts',
  'modem_commands',
  'system_events',
  'api_tokens',
];

/** The buffer is checked this often for clients that fell behind. */
const DRAIN_CHECK_MS = 100;

type ClientState = 'snapshot' | 'live' | 'behind';

/** A message as sent: text, or its UTF-8 bytes shared by every client that gets it. */
type Frame = string | Buffer;

/**
 * A modem's row as last read, and what is made of it, each once, when first needed: its JSON's
 * UTF-8 bytes as each view sends it, and what others derive from it (`Hub.perRow`). A changed row
 * is a new object: whoever holds the old one holds a consistent past.
 */
interface Row {
  modem: ModemView;
  full?: Buffer;
  redacted?: Buffer;
  derived?: Map<string, unknown>;
}

/** A read-only token's view: passwords hidden (`viewModem`). */
const REDACTED: Access = { scope: 'read-only', tokenId: 0, name: 'redacted' };

/** The row's JSON bytes as this token sees it (the caller has checked that it sees the modem). */
function rowBytes(row: Row, access: Access): Buffer {
  if (seesPasswords(access)) return (row.full ??= Buffer.from(JSON.stringify(row.modem)));
  return (row.redacted ??= Buffer.from(JSON.stringify(viewModem(REDACTED, row.modem))));
}

/**
 * Every modem's row in memory, in the order of the whole read (by host and slot; a modem first
 * seen later goes last, as the page places it): snapshots are made from these without a query.
 */
interface RowCache {
  rows: Map<string, Row>;
  order: string[];
  /** A row came or changed host or ports (its slot): the order is read again before it is used. */
  orderStale: boolean;
  readAt: number;
}

interface Client {
  ws: WebSocket;
  /** The peer's address (the per-address cap counts these). */
  address: string;
  /** What its token may see: updates and snapshots are filtered and redacted for it. */
  access: Access;
  state: ClientState;
  /** Updates that came while its snapshot was being read (sent after it, in order). */
  pending: Frame[];
  overflowed: boolean;
  behindSince: number;
  alive: boolean;
  badMessages: number;
  lastResyncAt: number;
  /** Its snapshot in two messages, these first rows and then the rest (0: one message). */
  firstRows: number;
  /** The connection under it: corked while one notification's messages are written (one write). */
  socket: Corkable | undefined;
}

/** What the hub does with a WebSocket's connection itself: hold writes, then send them as one. */
export interface Corkable {
  cork(): void;
  uncork(): void;
}

/**
 * The live stream: one LISTEN connection for every channel (so one inspector sees every host of a
 * farm), fan-out to WebSocket clients. A client gets a snapshot on connect and on `resync`, then
 * every update. A client that does not read is never buffered without bound: past
 * `clientBufferBytes` its updates are dropped, and once it has caught up it gets one `resync` and
 * a fresh snapshot (the coalesced update); behind for `clientStallMs` it is disconnected.
 */
export class Hub {
  readonly stats: HubStats = {
    clients: 0,
    connections: 0,
    notifications: 0,
    malformedNotifications: 0,
    messagesSent: 0,
    messagesDropped: 0,
    snapshots: 0,
    snapshotSerialisations: 0,
    snapshotErrors: 0,
    rowCacheReads: 0,
    rowCacheDrops: 0,
    slowClients: 0,
    resyncs: 0,
    disconnectedStalled: 0,
    disconnectedUnresponsive: 0,
    maxBufferedBytes: 0,
  };
  private readonly clients = new Set<Client>();
  private readonly limits: HubLimits;
  private readonly log: Logger;
  private listener: Listener | undefined;
  private listenedOnce = false;
  private readonly dirty = new Set<string>();
  private rowTimer: NodeJS.Timeout | undefined;
  /** Every modem's row, kept current by notifications; undefined until read (or after a re-LISTEN). */
  private rowCache: RowCache | undefined;
  /** Whole reads and row refreshes run one at a time: an older read never overwrites a newer. */
  private rowWork: Promise<unknown> = Promise.resolve();
  /** When the rows were last used (a snapshot, the listing, a scrape). */
  private rowsUsedAt = 0;
  private pingTimer: NodeJS.Timeout | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private readonly waiting = new Set<Client>();
  private snapshotRun: Promise<void> | undefined;
  private snapshotAttempt = 0;
  /** Bumped by every notification and re-LISTEN: a snapshot read at this version is still current. */
  private version = 0;
  /** The last snapshot read, and its bytes per view, while nothing has changed since. */
  private shared:
    | {
        version: number;
        at: string;
        /** The rows as they were when it was read (a row changed since is a new object). */
        rows: Row[];
        alerts: StoredAlert[];
        /** Its messages per view and shape, made once. */
        frames: Map<string, Buffer[]>;
      }
    | undefined;
  private stopped = true;

  constructor(
    private readonly options: {
      store: Store;
      limits?: Partial<HubLimits>;
      log?: Logger;
      listenHeartbeatIntervalMs?: number;
      listenHeartbeatTimeoutMs?: number;
    },
  ) {
    this.limits = { ...DEFAULT_HUB_LIMITS, ...options.limits };
    this.log = (options.log ?? silentLogger).child({ component: 'hub' });
  }

  get listenerStats(): Listener['stats'] | undefined {
    return this.listener?.stats;
  }

  get size(): number {
    return this.clients.size;
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.listener = await this.options.store.listen(CHANNELS, (n) => this.onNotification(n), {
      onCatchUp: () => {
        // NOTIFY is lost while not listening: after a re-LISTEN every client starts over, from
        // rows read again
        this.version++;
        this.rowCache = undefined;
        if (this.listenedOnce) this.resyncAll('listen_reconnected');
        this.listenedOnce = true;
        // a revocation may have been missed while not listening
        return this.dropRevoked();
      },
      ...(this.options.listenHeartbeatIntervalMs
        ? { heartbeatIntervalMs: this.options.listenHeartbeatIntervalMs }
        : {}),
      ...(this.options.listenHeartbeatTimeoutMs
        ? { heartbeatTimeoutMs: this.options.listenHeartbeatTimeoutMs }
        : {}),
    });
    this.pingTimer = setInterval(() => this.ping(), this.limits.pingIntervalMs);
    this.pingTimer.unref();
    // the rows read now (listening already: what changes meanwhile is read again after), so the
    // first client's snapshot does not wait for 10,000 of them; a failure is retried by that snapshot
    void this.currentRows().catch((err: unknown) =>
      this.log.warn({ err: coerceError(err) }, 'modem rows not read at start (database unreachable)'),
    );
  }

  /**
   * Every modem as `GET /api/modems` answers without filters or paging (ordered by host and slot),
   * as this token sees it: JSON made from the rows in memory, each serialised once per view.
   */
  async listing(access: Access): Promise<Buffer> {
    // the database answers as it would for a read (rows in memory are no answer during an outage)
    const [cache] = await Promise.all([this.currentRows(), this.options.store.sql`select 1`]);
    return Buffer.concat(jsonArray(visibleRows(orderedRows(cache), access), access));
  }

  /**
   * Something made of each modem's row, in the rows' order: `make` runs once per row and `key`
   * (the rows kept in memory remember it until the row changes), so a caller that asks on every
   * scrape pays only for the rows that changed since.
   */
  async perRow<T>(key: string, make: (modem: ModemView) => T): Promise<T[]> {
    const cache = await this.currentRows();
    const out: T[] = [];
    for (const row of orderedRows(cache)) {
      const derived = (row.derived ??= new Map());
      if (!derived.has(key)) derived.set(key, make(row.modem));
      out.push(derived.get(key) as T);
    }
    return out;
  }

  /** Every modem's state and signal for `/metrics`, from the rows in memory (each made once per change of its row). */
  gaugeRows(): Promise<ModemGaugeRow[]> {
    return this.perRow('gauge', (m) => ({
      imei: m.imei,
      host: m.host,
      state: m.state,
      rssi: m.rssi,
      rsrp: m.rsrp,
      sinr: m.sinr,
      stale: m.stale,
    }));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.pingTimer);
    clearInterval(this.drainTimer);
    clearTimeout(this.rowTimer);
    for (const c of this.clients) c.ws.close(1001, 'server stopping');
    await this.listener?.stop();
    await this.snapshotRun;
    // whoever did not answer the close in time is cut off
    for (const c of this.clients) c.ws.terminate();
    this.clients.clear();
    this.stats.clients = 0;
  }

  /**
   * A new authenticated WebSocket: snapshot first, then updates (as its token may see them). With
   * `firstRows`, its snapshots come in two messages: a `snapshot` with the first rows, then a
   * `snapshot_rest` with the others (a page draws the first screen before it has read them all).
   */
  add(
    ws: WebSocket,
    access: Access = CONFIG_ADMIN,
    address = '',
    options: { firstRows?: number; socket?: Corkable } = {},
  ): void {
    if (this.stopped) {
      ws.close(1001, 'server stopping');
      return;
    }
    const client: Client = {
      ws,
      address,
      access,
      state: 'snapshot',
      pending: [],
      overflowed: false,
      behindSince: 0,
      alive: true,
      badMessages: 0,
      lastResyncAt: 0,
      firstRows: options.firstRows ?? 0,
      socket: options.socket,
    };
    this.clients.add(client);
    this.stats.connections++;
    this.stats.clients = this.clients.size;
    ws.on('pong', () => {
      client.alive = true;
    });
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? null : Buffer.isBuffer(data) ? data.toString('utf8') : null;
      this.onClientMessage(client, text);
    });
    ws.on('close', () => this.remove(client));
    ws.on('error', (err) => {
      this.log.debug({ err }, 'websocket error');
      this.remove(client);
    });
    this.requestSnapshot(client);
  }

  /** Clients connected from this address now. */
  clientsFrom(address: string): number {
    let n = 0;
    for (const c of this.clients) if (c.address === address) n++;
    return n;
  }

  private remove(client: Client): void {
    this.clients.delete(client);
    this.waiting.delete(client);
    client.pending = [];
    this.stats.clients = this.clients.size;
  }

  private onClientMessage(client: Client, raw: string | null): void {
    const parsed = raw === null ? { problem: 'binary messages are not accepted' } : parseClientMessage(raw);
    if ('problem' in parsed) {
      client.badMessages++;
      this.sendTo(client, { type: 'error', error: 'bad_message', message: parsed.problem }, true);
      if (client.badMessages > this.limits.badMessages) client.ws.close(1008, 'too many bad messages');
      return;
    }
    if (parsed.type === 'ping') return this.sendTo(client, { type: 'pong' }, true);
    // a client waiting for its snapshot (or behind) gets one anyway; one requested resync a second
    if (client.state !== 'live') return;
    if (Date.now() - client.lastResyncAt < 1_000)
      return this.sendTo(
        client,
        { type: 'error', error: 'rate_limited', message: 'one resync a second' },
        true,
      );
    client.lastResyncAt = Date.now();
    if (client.ws.bufferedAmount > this.limits.clientBufferBytes) return this.fallBehind(client);
    this.stats.resyncs++;
    this.sendTo(client, { type: 'resync', reason: 'requested' });
    this.requestSnapshot(client);
  }

  // ---- fan-out ----

  /** Clients whose token was revoked are disconnected (1008) at once. */
  private disconnectToken(tokenId: number): void {
    for (const c of this.clients) {
      if (c.access.tokenId !== tokenId) continue;
      this.log.info({ token: c.access.name }, 'websocket client of a revoked token disconnected');
      c.ws.close(1008, 'token revoked');
      this.remove(c);
    }
  }

  private async dropRevoked(): Promise<void> {
    const ids = [
      ...new Set([...this.clients].flatMap((c) => (c.access.tokenId === null ? [] : [c.access.tokenId]))),
    ];
    if (ids.length === 0) return;
    try {
      const active = await this.options.store.activeTokenIds(ids);
      for (const id of ids) if (!active.has(id)) this.disconnectToken(id);
    } catch (err) {
      // the next catch-up checks again; the REST API refuses a revoked token on every request
      this.log.warn({ err: coerceError(err) }, 'revoked tokens not checked (database unreachable)');
    }
  }

  private onNotification(n: Notification): void {
    this.stats.notifications++;
    this.version++;
    const revoked = revokedTokenId(n);
    if (revoked !== undefined) return this.disconnectToken(revoked);
    const messages = messagesOf(n);
    if (messages === null) {
      this.stats.malformedNotifications++;
      this.log.warn(
        { channel: n.channel, notification: { payload: JSON.stringify(n.payload).slice(0, 200) } },
        'notification with an unexpected shape ignored',
      );
      return;
    }
    const imei = touchedImei(n);
    if (imei) this.markDirty(imei);
    // a journal batch: one message per transition, in the order stored (per modem: by seq), and
    // one write per client for all of them
    this.corked(() => {
      for (const message of messages) {
        if (message.type === 'transition') this.markDirty(message.imei);
        this.broadcast(message);
        // a host started, stopped, went stale or came back: its modems' rows (`stale`) follow
        if (message.type === 'host') void this.refreshHost(message.host);
      }
    });
  }

  /**
   * `send` with every live client's connection corked: what it writes goes out as one write per
   * client (a batch of 6 transitions to 100 clients: 100 writes, not 600; each costs a system call).
   */
  private corked(send: () => void): void {
    const held: Corkable[] = [];
    for (const c of this.clients)
      if (c.socket && c.state === 'live') {
        c.socket.cork();
        held.push(c.socket);
      }
    try {
      send();
    } finally {
      for (const socket of held) socket.uncork();
    }
  }

  /** Every modem of a host re-read and sent (a host event is rare: one query, not one per modem). */
  private async refreshHost(host: string): Promise<void> {
    if (!this.rowCache && this.clients.size === 0) return;
    try {
      await this.rowTask(async () => {
        const modems = await this.options.store.modems({ host });
        this.corked(() => {
          for (const modem of modems) this.sendRow(modem);
        });
      });
    } catch (err) {
      // a client that missed it sees the flag in its next snapshot; the host's next event sends it again
      this.log.warn({ err: coerceError(err), host }, "host's modems not refreshed (database unreachable)");
    }
  }

  /** Each client gets the message as its token sees it (one serialisation per view). */
  private broadcast(message: ServerMessage): void {
    if (this.clients.size === 0) return;
    const texts = new Map<boolean, Buffer | null>();
    for (const c of this.clients) {
      const redacted = !seesPasswords(c.access);
      let text = texts.get(redacted);
      if (text === undefined) {
        const view = viewMessage(redacted ? c.access : CONFIG_ADMIN, message);
        text = view && Buffer.from(JSON.stringify(view));
        texts.set(redacted, text);
      }
      // a reseller's view also depends on its modems: the shared text is sent only where visible
      if (text !== null && (c.access.scope !== 'reseller' || viewMessage(c.access, message) !== null))
        this.deliver(c, text);
    }
  }

  private deliver(client: Client, text: Frame): void {
    switch (client.state) {
      case 'snapshot':
        if (client.overflowed) return;
        if (client.pending.length >= this.limits.pendingMessages) {
          client.pending = [];
          client.overflowed = true;
          return;
        }
        client.pending.push(text);
        return;
      case 'behind':
        this.stats.messagesDropped++;
        return;
      case 'live': {
        const buffered = client.ws.bufferedAmount;
        if (buffered > this.stats.maxBufferedBytes) this.stats.maxBufferedBytes = buffered;
        if (buffered > this.limits.clientBufferBytes) {
          this.fallBehind(client);
          this.stats.messagesDropped++;
          return;
        }
        this.write(client, text);
      }
    }
  }

  private write(client: Client, text: Frame): void {
    if (client.ws.readyState !== client.ws.OPEN) return;
    // bytes shared by many clients go as text frames, encoded once
    client.ws.send(text, { binary: false });
    this.stats.messagesSent++;
  }

  /** Replies and protocol messages go out whatever the client's state (they are few). */
  private sendTo(client: Client, message: ServerMessage, always = false): void {
    const text = JSON.stringify(message);
    if (always) this.write(client, text);
    else this.deliver(client, text);
  }

  private fallBehind(client: Client): void {
    client.state = 'behind';
    client.behindSince = Date.now();
    this.stats.slowClients++;
    this.log.info({ bufferedBytes: client.ws.bufferedAmount }, 'slow websocket client: updates paused');
    if (!this.drainTimer) {
      this.drainTimer = setInterval(() => this.checkBehind(), DRAIN_CHECK_MS);
      this.drainTimer.unref();
    }
  }

  private checkBehind(): void {
    let anyBehind = false;
    for (const c of this.clients) {
      if (c.state !== 'behind') continue;
      if (c.ws.bufferedAmount <= this.limits.clientBufferBytes / 4) {
        // caught up: everything it missed comes as one fresh snapshot
        this.stats.resyncs++;
        this.write(c, JSON.stringify({ type: 'resync', reason: 'slow_client' } satisfies ServerMessage));
        this.requestSnapshot(c);
      } else if (Date.now() - c.behindSince > this.limits.clientStallMs) {
        this.stats.disconnectedStalled++;
        this.log.warn('websocket client stalled; disconnected');
        c.ws.terminate();
        this.remove(c);
      } else anyBehind = true;
    }
    if (!anyBehind) {
      clearInterval(this.drainTimer);
      this.drainTimer = undefined;
    }
  }

  private resyncAll(reason: 'listen_reconnected'): void {
    const text = JSON.stringify({ type: 'resync', reason } satisfies ServerMessage);
    for (const c of this.clients) {
      // a client behind gets its resync and snapshot once it has caught up (checkBehind), and one
      // past its buffer limit falls behind now: a snapshot is never piled onto a full buffer
      if (c.state === 'behind') continue;
      if (c.state === 'live' && c.ws.bufferedAmount > this.limits.clientBufferBytes) {
        this.fallBehind(c);
        continue;
      }
      if (c.state === 'live') this.write(c, text);
      this.stats.resyncs++;
      this.requestSnapshot(c);
    }
  }

  private ping(): void {
    for (const c of this.clients) {
      if (!c.alive) {
        this.stats.disconnectedUnresponsive++;
        c.ws.terminate();
        this.remove(c);
        continue;
      }
      c.alive = false;
      c.ws.ping();
    }
  }

  // ---- snapshots: one query serves every client waiting when it starts, and its bytes (one
  // serialisation per view) serve every client until the next notification ----

  private requestSnapshot(client: Client): void {
    client.state = 'snapshot';
    client.pending = [];
    client.overflowed = false;
    this.waiting.add(client);
    this.snapshotRun ??= this.runSnapshots().finally(() => {
      this.snapshotRun = undefined;
    });
  }

  private async runSnapshots(): Promise<void> {
    while (this.waiting.size > 0 && !this.stopped) {
      const batch = [...this.waiting];
      this.waiting.clear();
      let shared = this.shared;
      try {
        if (shared?.version !== this.version) {
          // what changes while this runs bumps the version: this one is never taken for newer
          const version = this.version;
          const [cache, alerts] = await Promise.all([
            this.currentRows(),
            this.options.store.alerts({ open: true, limit: 200 }),
          ]);
          const rows = orderedRows(cache);
          shared = { version, at: new Date().toISOString(), rows, alerts, frames: new Map() };
          this.shared = shared;
        }
        this.snapshotAttempt = 0;
      } catch (err) {
        this.stats.snapshotErrors++;
        for (const c of batch) if (this.clients.has(c)) this.waiting.add(c);
        const delay = backoffDelay(this.snapshotAttempt++, 250, 5_000, 0.2);
        this.log.warn({ err: coerceError(err), delayMs: delay }, 'snapshot failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, delay).unref());
        continue;
      }
      for (const c of batch) {
        if (!this.clients.has(c) || this.waiting.has(c)) continue;
        this.stats.snapshots++;
        // one serialisation per view, shape and version: admins, read-only tokens, each reseller token
        const view = c.access.scope === 'reseller' ? `reseller:${c.access.tokenId}` : c.access.scope;
        const key = `${view}:${c.firstRows}`;
        let frames = shared.frames.get(key);
        if (frames === undefined) {
          frames = snapshotFrames(c.access, shared, c.firstRows);
          shared.frames.set(key, frames);
          this.stats.snapshotSerialisations++;
        }
        // (its messages go out together: nothing comes between them)
        for (const frame of frames) this.write(c, frame);
        if (c.overflowed) {
          // too much happened while reading: this snapshot is stale, read another
          c.overflowed = false;
          c.pending = [];
          this.waiting.add(c);
          continue;
        }
        c.state = 'live';
        for (const p of c.pending) this.deliver(c, p);
        c.pending = [];
      }
    }
  }

  // ---- modem rows: kept in memory for snapshots; changed modems are re-read in one query and
  // sent whole ----

  /** Runs after the row work queued before it (whole reads and refreshes never interleave). */
  private rowTask<T>(task: () => Promise<T>): Promise<T> {
    const run = this.rowWork.then(task, task);
    this.rowWork = run.catch(() => undefined);
    return run;
  }

  /**
   * The rows in memory, read whole first when there are none or they are old, with every row a
   * notification has named so far read again: a snapshot shows what was notified before it.
   */
  private currentRows(): Promise<RowCache> {
    this.rowsUsedAt = Date.now();
    return this.rowTask(async () => {
      const cache = this.rowCache;
      if (cache && Date.now() - cache.readAt < this.limits.rowCacheMaxAgeMs) {
        while (this.dirty.size > 0) await this.readDirty();
        if (cache.orderStale) {
          cache.orderStale = false;
          const order = await this.options.store.modemOrder().catch((err: unknown) => {
            cache.orderStale = true;
            throw err;
          });
          const listed = new Set(order);
          // (one that came after the read goes last until the next)
          cache.order = [
            ...order.filter((imei) => cache.rows.has(imei)),
            ...cache.order.filter((imei) => !listed.has(imei)),
          ];
        }
        return cache;
      }
      this.dirty.clear();
      const modems = await this.options.store.modems();
      this.stats.rowCacheReads++;
      const fresh: RowCache = { rows: new Map(), order: [], orderStale: false, readAt: Date.now() };
      for (const modem of modems) {
        fresh.rows.set(modem.imei, { modem });
        fresh.order.push(modem.imei);
      }
      this.rowCache = fresh;
      this.warm(fresh);
      return fresh;
    });
  }

  /**
   * The rows of a whole read serialised for admins in the background, a slice at a time between
   * other work: the first snapshot after it does not make 10,000 rows' JSON at once.
   */
  private warm(cache: RowCache): void {
    const rows = [...cache.rows.values()];
    let i = 0;
    const slice = (): void => {
      if (this.rowCache !== cache || this.stopped) return;
      for (const end = Math.min(rows.length, i + 250); i < end; i++) rowBytes(rows[i] as Row, CONFIG_ADMIN);
      if (i < rows.length) setImmediate(slice).unref();
    };
    setImmediate(slice).unref();
  }

  /** A row read again: kept, and sent to every client that sees it (one serialisation per view). */
  private sendRow(modem: ModemView): void {
    const row: Row = { modem };
    // a snapshot made before this row changed is not one to share any more
    this.version++;
    const cache = this.rowCache;
    if (cache) {
      const was = cache.rows.get(modem.imei)?.modem;
      if (!was) cache.order.push(modem.imei);
      if (!was || was.host !== modem.host || was.socksPort !== modem.socksPort) cache.orderStale = true;
      cache.rows.set(modem.imei, row);
    }
    if (this.clients.size === 0) return;
    const texts = new Map<boolean, Buffer>();
    for (const c of this.clients) {
      if (!sees(c.access, modem.imei)) continue;
      const full = seesPasswords(c.access);
      let text = texts.get(full);
      if (text === undefined) {
        text = Buffer.concat([MODEM_HEAD, rowBytes(row, c.access), CLOSE]);
        texts.set(full, text);
      }
      this.deliver(c, text);
    }
  }

  private markDirty(imei: string): void {
    // kept current while used, with or without clients: the first client's snapshot and the API's
    // listing come from these rows; an inspector nobody uses stops re-reading them
    if (this.clients.size === 0 && Date.now() - this.rowsUsedAt > this.limits.rowCacheIdleMs) {
      if (this.rowCache) {
        this.rowCache = undefined;
        this.shared = undefined;
        this.dirty.clear();
        this.stats.rowCacheDrops++;
        this.log.debug('modem rows unused: dropped until the next use');
      }
      return;
    }
    if (!this.rowCache && this.clients.size === 0) return;
    this.dirty.add(imei);
    this.rowTimer ??= setTimeout(() => void this.refreshRows(), this.limits.rowRefreshMs);
  }

  /** Up to 1,000 of the rows named since the last read, read again and sent (back in `dirty` on failure). */
  private async readDirty(): Promise<void> {
    const imeis = [...this.dirty].slice(0, 1000);
    for (const imei of imeis) this.dirty.delete(imei);
    try {
      const modems = await this.options.store.modems({ imeis });
      this.corked(() => {
        for (const modem of modems) this.sendRow(modem);
      });
    } catch (err) {
      for (const imei of imeis) this.dirty.add(imei);
      throw err;
    }
  }

  private async refreshRows(): Promise<void> {
    let delay = this.limits.rowRefreshMs;
    try {
      await this.rowTask(() => this.readDirty());
    } catch (err) {
      delay = Math.max(delay, 1_000);
      this.log.debug({ err: coerceError(err) }, 'modem rows not refreshed (database unreachable)');
    }
    this.rowTimer = undefined;
    if (this.dirty.size > 0 && !this.stopped)
      this.rowTimer = setTimeout(() => void this.refreshRows(), delay);
  }
}

const MODEM_HEAD = Buffer.from('{"type":"modem","modem":');
const CLOSE = Buffer.from('}');
const COMMA = Buffer.from(',');

/** Every row in memory, in order. */
function orderedRows(cache: RowCache): Row[] {
  const rows: Row[] = [];
  for (const imei of cache.order) {
    const row = cache.rows.get(imei);
    if (row) rows.push(row);
  }
  return rows;
}

/** The rows this token sees. */
function visibleRows(rows: readonly Row[], access: Access): readonly Row[] {
  return access.scope === 'reseller' ? rows.filter((row) => sees(access, row.modem.imei)) : rows;
}

/** The pieces of a JSON array of these rows as this token sees them (each row's bytes made once per view). */
function jsonArray(rows: readonly Row[], access: Access): Buffer[] {
  const pieces: Buffer[] = [Buffer.from('[')];
  rows.forEach((row, i) => {
    if (i > 0) pieces.push(COMMA);
    pieces.push(rowBytes(row, access));
  });
  pieces.push(Buffer.from(']'));
  return pieces;
}

/**
 * The snapshot as this token sees it, made from the rows' bytes (each serialised once per view, not
 * once per snapshot): one message, the text `JSON.stringify(viewMessage(access, snapshot))` gives;
 * or, with `firstRows`, a `snapshot` of the first rows with `rest` (how many follow) and then a
 * `snapshot_rest` of the others.
 */
function snapshotFrames(
  access: Access,
  shared: { at: string; rows: readonly Row[]; alerts: StoredAlert[] },
  firstRows: number,
): Buffer[] {
  const rows = visibleRows(shared.rows, access);
  const alerts = JSON.stringify(viewAlerts(access, shared.alerts));
  const head = Buffer.from(`{"type":"snapshot","at":${JSON.stringify(shared.at)},"modems":`);
  if (firstRows <= 0 || rows.length <= firstRows)
    return [Buffer.concat([head, ...jsonArray(rows, access), Buffer.from(`,"alerts":${alerts}}`)])];
  const rest = rows.length - firstRows;
  return [
    Buffer.concat([
      head,
      ...jsonArray(rows.slice(0, firstRows), access),
      Buffer.from(`,"alerts":${alerts},"rest":${rest}}`),
    ]),
    Buffer.concat([
      Buffer.from('{"type":"snapshot_rest","modems":'),
      ...jsonArray(rows.slice(firstRows), access),
      CLOSE,
    ]),
  ];
}
