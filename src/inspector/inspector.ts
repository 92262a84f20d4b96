import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  fastify,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
} from 'fastify';
import { WebSocketServer } from 'ws';
import { silentLogger, type Logger } from '../log.js';
import { DEFAULT_POLICY, type Policy } from '../policy.js';
import type { Store } from '../store/store.js';
import { coerceError } from '../util/errors.js';
import type { Access } from './access.js';
import { registerApi } from './api.js';
import { HostAllowlist } from './hostAllowlist.js';
import { hostRefusal, replyError } from './httpErrors.js';
import { registerAlertsApi } from './alertsApi.js';
import { DEFAULT_HUB_LIMITS, Hub, type HubLimits } from './hub.js';
import { loadPage, registerPage } from './page.js';
import { RateLimiter } from './rateLimit.js';
import { StatusReporter, type StatusSource } from './status.js';
import { authenticate, registerAuthorization } from './authorize.js';
import { registerAccessApi } from './accessApi.js';
import { registerCredentialsApi } from './credentialsApi.js';
import { registerTrafficApi } from './trafficApi.js';
import { registerHistoryApi } from './historyApi.js';
import { bearerToken, tokenMatches } from './token.js';

export interface InspectorLimits
  extends
    HubLimits,
    Pick<
      Policy,
      | 'commandBurst'
      | 'commandRefillMs'
      | 'linkBurst'
      | 'linkRefillMs'
      | 'publicBurst'
      | 'publicRefillMs'
      | 'httpRequestTimeoutMs'
      | 'httpHeadersTimeoutMs'
      | 'httpKeepAliveTimeoutMs'
      | 'httpIdleTimeoutMs'
      | 'httpMaxConnections'
      | 'metricsCacheMs'
    > {
  /** Largest request body (413 above). */
  bodyBytes: number;
  /** WebSocket clients at once (503 above; policy `wsMaxClients`). */
  maxClients: number;
  /** WebSocket clients at once from one client address (503 above; policy `wsMaxClientsPerAddress`). */
  maxClientsPerAddress: number;
  /** Largest WebSocket message a client may send (the connection is closed above). */
  wsMessageBytes: number;
  /** `/ready` fails when the database does not answer within this time... */
  readyDatabaseTimeoutMs: number;
  /** ...or the oldest unwritten transition is older than this. */
  readyJournalLagMs: number;
  rotateWaitMaxSeconds: number;
}

/** The inspector's share of the policy (the configuration's `policy` key). */
export const inspectorLimits = (policy: Policy): Partial<InspectorLimits> => ({
  commandBurst: policy.commandBurst,
  commandRefillMs: policy.commandRefillMs,
  linkBurst: policy.linkBurst,
  linkRefillMs: policy.linkRefillMs,
  publicBurst: policy.publicBurst,
  publicRefillMs: policy.publicRefillMs,
  httpRequestTimeoutMs: policy.httpRequestTimeoutMs,
  httpHeadersTimeoutMs: policy.httpHeadersTimeoutMs,
  httpKeepAliveTimeoutMs: policy.httpKeepAliveTimeoutMs,
  httpIdleTimeoutMs: policy.httpIdleTimeoutMs,
  httpMaxConnections: policy.httpMaxConnections,
  metricsCacheMs: policy.metricsCacheMs,
  maxClients: policy.wsMaxClients,
  maxClientsPerAddress: policy.wsMaxClientsPerAddress,
});

export const DEFAULT_INSPECTOR_LIMITS: InspectorLimits = {
  ...DEFAULT_HUB_LIMITS,
  ...(inspectorLimits(DEFAULT_POLICY) as Required<ReturnType<typeof inspectorLimits>>),
  bodyBytes: 16 * 1024,
  wsMessageBytes: 4 * 1024,
  readyDatabaseTimeoutMs: 1_000,
  readyJournalLagMs: 5_000,
  rotateWaitMaxSeconds: 120,
};

export interface InspectorOptions {
  store: Store;
  host: string;
  port: number;
  /**
   * The admin bearer token (MODEMFLEET_API_TOKEN or the state dir's) for everything but health,
   * metrics, the page's files and rotation links; tokens created with `modemfleet token create`
   * work beside it, within their scope.
   */
  token: string;
  /** The supervisor of this host, for readiness and metrics. */
  supervisor?: StatusSource;
  limits?: Partial<InspectorLimits>;
  /** Host header values served beyond loopback and the listen address (config `allowedHosts`). */
  allowedHosts?: readonly string[];
  listenHeartbeatIntervalMs?: number;
  listenHeartbeatTimeoutMs?: number;
  log?: Logger;
}

/** Paths served without the token: they hold no farm data or carry their own secret. */
const PUBLIC = /^\/(health|live|ready|metrics|rotate\/[^/]*|app\.js|style\.css|favicon\.svg)?$/;

/** Unauthenticated paths that do work per request: limited per client address. */
const LIMITED = /^\/(health|ready|metrics|rotate(\/.*)?)$/;

/**
 * The HTTP API, the WebSocket stream and the web page, served by the supervisor (127.0.0.1 by
 * default). Every request is validated; errors are `{ error, message }` with a 4xx, or 503 while
 * the database is away.
 */
export class Inspector {
  readonly hub: Hub;
  private readonly limits: InspectorLimits;
  private readonly log: Logger;
  private readonly hosts: HostAllowlist;
  private app: FastifyInstance | undefined;
  private wss: WebSocketServer | undefined;
  private status: StatusReporter | undefined;

  constructor(private readonly options: InspectorOptions) {
    this.limits = { ...DEFAULT_INSPECTOR_LIMITS, ...options.limits };
    this.log = (options.log ?? silentLogger).child({ component: 'inspector' });
    this.hosts = new HostAllowlist(options.host, options.allowedHosts);
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

  /** Renders of `/metrics` so far (each reads the database; scrapes within `metricsCacheMs` share one). */
  get metricsRenders(): number {
    return this.status?.metricsRenders ?? 0;
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
      metricsCacheMs: this.limits.metricsCacheMs,
    });
    status.start();
    this.status = status;
    const limits = this.limits;
    const publicLimiter = new RateLimiter({ burst: limits.publicBurst, refillMs: limits.publicRefillMs });
    const app = fastify({
      logger: false,
      bodyLimit: limits.bodyBytes,
      // nothing holds a connection open for free: a slow request (headers or body trickled), an idle
      // keep-alive connection or a silent socket is closed; node checks the deadlines every 500 ms
      requestTimeout: limits.httpRequestTimeoutMs,
      keepAliveTimeout: limits.httpKeepAliveTimeoutMs,
      connectionTimeout: limits.httpIdleTimeoutMs,
      http: { headersTimeout: limits.httpHeadersTimeoutMs, connectionsCheckingInterval: 500 },
      // an extra property is an error, not silently dropped; query strings are coerced to types
      ajv: { customOptions: { removeAdditional: false, coerceTypes: true, allErrors: false } },
      return503OnClosing: true,
      forceCloseConnections: true,
    });
    this.app = app;
    // JSON only: anything else is 415, not a string that fails validation
    app.removeContentTypeParser('text/plain');
    app.server.maxConnections = limits.httpMaxConnections;
    const hosts = this.hosts;
    app.addHook('onRequest', async (req, reply) => {
      if (!hosts.allows(req.headers.host)) return reply.code(421).send(hostRefusal(req.headers.host));
      const path = req.url.split('?')[0] ?? '';
      if (LIMITED.test(path)) {
        const waitMs = publicLimiter.take(req.ip);
        if (waitMs > 0)
          return reply
            .code(429)
            .header('retry-after', String(Math.ceil(waitMs / 1000)))
            .send({ error: 'rate_limited', message: `too many requests from ${req.ip}; slow down` });
      }
    });
    // who the token is and what it may do (admin, read-only, reseller): src/inspector/authorize.ts
    registerAuthorization(app, {
      store: this.options.store,
      adminToken: this.options.token,
      isPublic: (path) => PUBLIC.test(path),
      bearer: (req) => bearerToken(req.headers.authorization),
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
    // the database's error text (addresses, user names) only with the token
    const readiness = async (req: FastifyRequest) =>
      status.readiness(tokenMatches(bearerToken(req.headers.authorization), this.options.token));
    app.get('/ready', async (req, reply) => {
      const r = await readiness(req);
      return reply.code(r.ready ? 200 : 503).send(r);
    });
    app.get('/health', async (req) => {
      const r = await readiness(req);
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
      reply.header('content-type', status.metricsContentType).send(await status.metrics()),
    );
    const apiDeps = {
      store: this.options.store,
      // the operator and rotation links spend separate budgets: a looping link cannot spend the operator's
      operatorLimiter: new RateLimiter({ burst: limits.commandBurst, refillMs: limits.commandRefillMs }),
      linkLimiter: new RateLimiter({ burst: limits.linkBurst, refillMs: limits.linkRefillMs }),
      rotateWaitMaxSeconds: limits.rotateWaitMaxSeconds,
      idleTimeoutMs: limits.httpIdleTimeoutMs,
      listing: (access: Access) => this.hub.listing(access),
    };
    registerApi(app, apiDeps);
    registerCredentialsApi(app, apiDeps);
    registerTrafficApi(app, apiDeps);
    registerAccessApi(app, apiDeps);
    registerAlertsApi(app, { store: this.options.store });
    registerHistoryApi(app, { store: this.options.store });
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
    if (!this.hosts.allows(req.headers.host)) {
      const body = JSON.stringify(hostRefusal(req.headers.host));
      socket.end(
        `HTTP/1.1 421 Misdirected Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
      return;
    }
    let url: URL;
    try {
      url = new URL(req.url ?? '/', 'http://localhost');
    } catch {
      return refuse(400, 'Bad Request', 'malformed URL');
    }
    if (url.pathname !== '/ws') return refuse(404, 'Not Found', 'WebSocket endpoint is /ws');
    const token = bearerToken(req.headers.authorization) ?? url.searchParams.get('token') ?? undefined;
    // `?first=N`: snapshots in two messages, the first N rows and then the rest (the page asks for it)
    const first = url.searchParams.get('first');
    if (first !== null && !/^[1-9][0-9]{0,4}$/.test(first))
      return refuse(400, 'Bad Request', '?first= is a number of rows from 1 to 99999');
    const firstRows = first === null ? 0 : Number(first);
    socket.pause();
    authenticate(this.options.store, this.options.token, token).then(
      (access) => {
        socket.resume();
        if (!access)
          return refuse(
            401,
            'Unauthorized',
            'a valid token is required (Authorization: Bearer TOKEN or ?token=)',
          );
        this.accept(req, socket, head, access, firstRows, refuse);
      },
      (err: unknown) => {
        this.log.warn({ err: coerceError(err) }, 'websocket token not checked (database unreachable)');
        socket.resume();
        refuse(503, 'Service Unavailable', 'the database is unreachable; retry shortly');
      },
    );
  }

  private accept(
    req: IncomingMessage,
    socket: Duplex,
    head: Buffer,
    access: Access,
    firstRows: number,
    refuse: (code: number, text: string, message: string) => void,
  ): void {
    if (socket.destroyed) return;
    if (this.hub.size >= this.limits.maxClients)
      return refuse(
        503,
        'Service Unavailable',
        `too many WebSocket clients (limit ${this.limits.maxClients})`,
      );
    const address = req.socket.remoteAddress ?? '';
    if (this.hub.clientsFrom(address) >= this.limits.maxClientsPerAddress)
      return refuse(
        503,
        'Service Unavailable',
        `too many WebSocket clients from ${address} (limit ${this.limits.maxClientsPerAddress})`,
      );
    const wss = this.wss;
    if (!wss) return refuse(503, 'Service Unavailable', 'stopping');
    wss.handleUpgrade(req, socket, head, (ws) => this.hub.add(ws, access, address, { firstRows, socket }));
  }

  private onError(err: FastifyError, url: string, reply: FastifyReply): void {
    replyError(err, reply, { bodyBytes: this.limits.bodyBytes, log: this.log, url });
  }
}
