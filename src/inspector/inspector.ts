import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { fastify, type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { WebSocketServer } from 'ws';
import { silentLogger, type Logger } from '../log.js';
import { isRetryable } from '../store/pgErrors.js';
import type { Store } from '../store/store.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { registerApi } from './api.js';
import { ALERTS_API_STATUS, registerAlertsApi } from './alertsApi.js';
import { DEFAULT_HUB_LIMITS, Hub, type HubLimits } from './hub.js';
import { loadPage, registerPage } from './page.js';
import { RateLimiter } from './rateLimit.js';
import { StatusReporter, type StatusSource } from './status.js';
import { bearerToken, tokenMatches } from './token.js';

export interface InspectorLimits extends HubLimits {
  /** Largest request body (413 above). */
  bodyBytes: number;
  /** WebSocket clients at once (503 above). */
  maxClients: number;
  /** Largest WebSocket message a client may send (the connection is closed above). */
  wsMessageBytes: number;
  /** Commands per modem: a burst, then one per interval (429 above). */
  commandBurst: number;
  commandRefillMs: number;
  /** `/ready` fails when the database does not answer within this time... */
  readyDatabaseTimeoutMs: number;
  /** ...or the oldest unwritten transition is older than this. */
  readyJournalLagMs: number;
  rotateWaitMaxSeconds: number;
}

export const DEFAULT_INSPECTOR_LIMITS: InspectorLimits = {
  ...DEFAULT_HUB_LIMITS,
  bodyBytes: 16 * 1024,
  maxClients: 100,
  wsMessageBytes: 4 * 1024,
  commandBurst: 5,
  commandRefillMs: 2_000,
  readyDatabaseTimeoutMs: 1_000,
  readyJournalLagMs: 5_000,
  rotateWaitMaxSeconds: 120,
};

export interface InspectorOptions {
  store: Store;
  host: string;
  port: number;
  /** The bearer token for everything but health, metrics, the page's files and rotation links. */
  token: string;
  /** The supervisor of this host, for readiness and metrics. */
  supervisor?: StatusSource;
  limits?: Partial<InspectorLimits>;
  listenHeartbeatIntervalMs?: number;
  listenHeartbeatTimeoutMs?: number;
  log?: Logger;
}

/** Paths served without the token: they hold no farm data or carry their own secret. */
const PUBLIC = /^\/(health|live|ready|metrics|rotate\/[^/]*|app\.js|style\.css|favicon\.svg)?$/;

/** How errors become HTTP answers: a stable code and a clear message, never a stack. */
const STATUS_BY_CODE: Readonly<Record<string, number>> = {
  unknown_modem: 404,
  unknown_command: 404,
  unknown_link: 404,
  unknown_schedule: 404,
  invalid_schedule: 400,
  invalid_imei: 400,
  invalid_command: 400,
  invalid_request: 400,
  rate_limited: 429,
  ...ALERTS_API_STATUS,
};

/**
 * The HTTP API, the WebSocket stream and the web page, served by the supervisor (127.0.0.1 by
 * default). Every request is validated; errors are `{ error, message }` with a 4xx, or 503 while
 * the database is away.
 */
export class Inspector {
  readonly hub: Hub;
  private readonly limits: InspectorLimits;
  private readonly log: Logger;
  private app: FastifyInstance | undefined;
  private wss: WebSocketServer | undefined;
  private status: StatusReporter | undefined;

  constructor(private readonly options: InspectorOptions) {
    this.limits = { ...DEFAULT_INSPECTOR_LIMITS, ...options.limits };
    this.log = (options.log ?? silentLogger).child({ component: 'inspector' });
    this.hub = new Hub({
      store: options.store,
      limits: this.limits,
      log: this.log,
      ...(options.listenHeartbeatIntervalMs
        ? { listenHeartbeatIntervalMs: options.listenHeartbeatIntervalMs }
        : {}),
      ...(options.listenHeartbeatTimeoutMs
        ? { listenHeartbeatTimeoutMs: options.listenHeartbeatTimeoutMs }
        : {}),
    });
  }

  /** Where it listens (the real port when 0 was asked for). */
  get address(): { host: string; port: number } {
    const a = this.app?.server.address() as AddressInfo | null | undefined;
    if (!a) throw new Error('the inspector is not listening');
    return { host: a.address, port: a.port };
  }

  get url(): string {
    const { host, port } = this.address;
    return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
  }

  async start(): Promise<void> {
    const page = await loadPage();
    await this.hub.start();
    const status = new StatusReporter({
      store: this.options.store,
      hub: this.hub,
      supervisor: this.options.supervisor,
      databaseTimeoutMs: this.limits.readyDatabaseTimeoutMs,
      journalLagMs: this.limits.readyJournalLagMs,
    });
    this.status = status;
    const app = fastify({
      logger: false,
      bodyLimit: this.limits.bodyBytes,
      // an extra property is an error, not silently dropped; query strings are coerced to types
      ajv: { customOptions: { removeAdditional: false, coerceTypes: true, allErrors: false } },
      return503OnClosing: true,
      forceCloseConnections: true,
    });
    this.app = app;
    // JSON only: anything else is 415, not a string that fails validation
    app.removeContentTypeParser('text/plain');
    app.addHook('onRequest', async (req, reply) => {
      const path = req.url.split('?')[0] ?? '';
      if (PUBLIC.test(path)) return;
      if (!tokenMatches(bearerToken(req.headers.authorization), this.options.token)) {
        return reply.code(401).header('www-authenticate', 'Bearer realm="modemfleet"').send({
          error: 'unauthorized',
          message: 'a valid bearer token is required (Authorization: Bearer TOKEN)',
        });
      }
    });
    app.addHook('onSend', async (_req, reply, payload) => {
      reply.header('x-content-type-options', 'nosniff');
      reply.header('referrer-policy', 'no-referrer');
      reply.header('cache-control', reply.getHeader('cache-control') ?? 'no-store');
      return payload;
    });
    app.setErrorHandler((err: FastifyError, req, reply) => this.onError(err, req.url, reply));
    app.setNotFoundHandler((req, reply) => {
      void reply
        .code(404)
        .send({ error: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` });
    });

    app.get('/live', () => Promise.resolve({ status: 'ok' }));
    app.get('/ready', async (_req, reply) => {
      const r = await status.readiness();
      return reply.code(r.ready ? 200 : 503).send(r);
    });
    app.get('/health', async () => {
      const r = await status.readiness();
      const s = this.options.supervisor?.status();
      return {
        status: r.ready ? 'ok' : 'degraded',
        ...r,
        uptimeSeconds: Math.round(process.uptime()),
        ...(s ? { modems: s.localModems, startedAt: s.startedAt } : {}),
        websocketClients: this.hub.size,
      };
    });
    app.get('/metrics', async (_req, reply) =>
      reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8').send(await status.metrics()),
    );
    registerApi(app, {
      store: this.options.store,
      limiter: new RateLimiter({ burst: this.limits.commandBurst, refillMs: this.limits.commandRefillMs }),
      rotateWaitMaxSeconds: this.limits.rotateWaitMaxSeconds,
    });
    registerAlertsApi(app, { store: this.options.store });
    registerPage(app, page);

    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.limits.wsMessageBytes });
    app.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) =>
      this.onUpgrade(req, socket, head),
    );
    await app.listen({ host: this.options.host, port: this.options.port });
    this.log.info({ url: this.url }, 'inspector listening');
  }

  async stop(): Promise<void> {
    const failures: unknown[] = [];
    await this.hub.stop().catch((err: unknown) => failures.push(err));
    this.wss?.close();
    await this.app?.close().catch((err: unknown) => failures.push(err));
    this.app = undefined;
    if (failures.length) throw new AggregateError(failures, 'inspector stop failed');
  }

  private onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const refuse = (code: number, text: string, message: string): void => {
      const body = JSON.stringify({ error: text.toLowerCase().replace(/ /g, '_'), message });
      socket.end(
        `HTTP/1.1 ${code} ${text}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    socket.on('error', () => socket.destroy());
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return refuse(400, 'Bad Request', 'malformed URL');
    }
    if (url.pathname !== '/ws') return refuse(404, 'Not Found', 'WebSocket endpoint is /ws');
    const token = bearerToken(req.headers.authorization) ?? url.searchParams.get('token') ?? undefined;
    if (!tokenMatches(token, this.options.token))
      return refuse(
        401,
        'Unauthorized',
        'a valid token is required (Authorization: Bearer TOKEN or ?token=)',
      );
    if (this.hub.size >= this.limits.maxClients)
      return refuse(
        503,
        'Service Unavailable',
        `too many WebSocket clients (limit ${this.limits.maxClients})`,
      );
    const wss = this.wss;
    if (!wss) return refuse(503, 'Service Unavailable', 'stopping');
    wss.handleUpgrade(req, socket, head, (ws) => this.hub.add(ws));
  }

  private onError(err: FastifyError, url: string, reply: FastifyReply): void {
    if (err instanceof ModemfleetError) {
      const code = STATUS_BY_CODE[err.code] ?? 400;
      void reply.code(code).send({ error: err.code, message: err.message });
      return;
    }
    if (err.validation) {
      void reply.code(400).send({ error: 'invalid_request', message: err.message });
      return;
    }
    const status = err.statusCode ?? 500;
    if (status === 413) {
      void reply.code(413).send({
        error: 'body_too_large',
        message: `request bodies are limited to ${this.limits.bodyBytes} bytes`,
      });
      return;
    }
    if (status === 415) {
      void reply
        .code(415)
        .send({ error: 'unsupported_media_type', message: 'send JSON (Content-Type: application/json)' });
      return;
    }
    if (err.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') {
      void reply.code(400).send({ error: 'invalid_json', message: err.message });
      return;
    }
    if (status >= 400 && status < 500) {
      void reply.code(status).send({ error: 'bad_request', message: err.message });
      return;
    }
    if (isRetryable(err)) {
      void reply
        .code(503)
        .header('retry-after', '5')
        .send({ error: 'database_unavailable', message: 'the database is unreachable; retry shortly' });
      return;
    }
    this.log.error({ err: coerceError(err), url: url.split('?')[0] }, 'request failed');
    void reply.code(500).send({ error: 'internal', message: 'internal error (logged)' });
  }
}
