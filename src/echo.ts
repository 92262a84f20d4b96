import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from './log.js';
import { ModemfleetError, coerceError } from './util/errors.js';
import { shutdownSignal } from './util/signals.js';

/**
 * The echo endpoint (`modemfleet echo`): a tiny HTTP server that answers `GET /` and `GET /ip`
 * with the client's address as plain text and nothing else, so a farm can see the public address
 * of each proxy port (`dataPlane.egress`) without a public service that rate-limits a farm probing
 * every port every minute, or changes its answer. The lab's carrier (src/sim/lab/echoServer.ts)
 * and the demo run the same server.
 *
 * It is meant to face the internet: no request is logged, bodies are never read, headers and
 * requests are bounded in size and time (`ECHO_LIMITS`), idle connections are closed soon.
 */

/** Limits of the echo endpoint: small, since it only ever answers one short line. */
export const ECHO_LIMITS = {
  /** Request line plus headers, in bytes (Node's default is 16 KiB). */
  maxHeaderSize: 4_096,
  /** The whole request must have arrived within this (slowloris). */
  requestTimeoutMs: 5_000,
  /** The headers must have arrived within this. */
  headersTimeoutMs: 3_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 2_000,
  /** A socket with no activity at all is closed after this. */
  socketTimeoutMs: 10_000,
  /** Requests served on one connection before it is closed. */
  maxRequestsPerSocket: 100,
  /** Connections at once; more are refused by the kernel's backlog, then dropped. */
  maxConnections: 4_096,
  /** How often Node checks requests and headers against their timeouts. */
  connectionsCheckingIntervalMs: 1_000,
} as const;

export const DEFAULT_ECHO_LISTEN = { host: '0.0.0.0', port: 8080 } as const;

const PATHS = new Set(['/', '/ip']);

/** The address as the internet writes it: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) as IPv4. */
export function clientAddress(remote: string | undefined): string {
  if (remote === undefined) return '';
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(remote);
  return mapped?.[1] ?? remote;
}

function answer(req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '').split('?', 1)[0] ?? '';
  const ok = (req.method === 'GET' || req.method === 'HEAD') && PATHS.has(path);
  const body = ok ? clientAddress(req.socket.remoteAddress) : 'not found';
  // a request that carries a body is never read: answer it and close the connection
  const hasBody =
    req.headers['transfer-encoding'] !== undefined ||
    (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
  res.writeHead(ok ? 200 : 404, {
    'content-type': 'text/plain',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    ...(ok && !hasBody ? {} : { connection: 'close' }),
  });
  res.end(req.method === 'HEAD' ? undefined : body);
}

/** An echo server, not yet listening (`EchoServer` listens and closes it). */
export function createEchoServer(): Server {
  const server = createServer(
    {
      maxHeaderSize: ECHO_LIMITS.maxHeaderSize,
      requestTimeout: ECHO_LIMITS.requestTimeoutMs,
      headersTimeout: ECHO_LIMITS.headersTimeoutMs,
      keepAliveTimeout: ECHO_LIMITS.keepAliveTimeoutMs,
      connectionsCheckingInterval: ECHO_LIMITS.connectionsCheckingIntervalMs,
      // HTTP/1.0 probes (src/net/proxyClient.ts) and minimal clients need not send Host
      requireHostHeader: false,
    },
    answer,
  );
  server.maxRequestsPerSocket = ECHO_LIMITS.maxRequestsPerSocket;
  server.maxConnections = ECHO_LIMITS.maxConnections;
  server.setTimeout(ECHO_LIMITS.socketTimeoutMs, (socket) => socket.destroy());
  // a malformed or oversized request: Node's own answer (400, 408, 431) and close; nothing logged
  return server;
}

export interface EchoListen {
  host: string;
  port: number;
}

/** The echo endpoint as a long-lived component: `start()` listens, `stop()` closes. */
export class EchoServer {
  private server: Server | undefined;

  constructor(private readonly listen: EchoListen = DEFAULT_ECHO_LISTEN) {}

  /** Listens; resolves with the address it got (port 0: one the kernel picked). */
  async start(): Promise<EchoListen> {
    if (this.server) throw new ModemfleetError('echo_started', 'the echo server is already started');
    const server = createEchoServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.listen.port, this.listen.host, () => {
        server.off('error', reject);
        resolve();
      });
    }).catch((err: unknown) => {
      const e = coerceError(err);
      throw new ModemfleetError(
        'echo_listen_failed',
        `cannot listen on ${this.listen.host}:${this.listen.port}: ${(e as { code?: string }).code ?? e.message}`,
        { cause: e },
      );
    });
    this.server = server;
    const address = server.address();
    return {
      host: this.listen.host,
      port: typeof address === 'object' && address ? address.port : this.listen.port,
    };
  }

  /** The URL a farm's `dataPlane.egress.url` names (host as listened on). */
  url(address: EchoListen): string {
    return `http://${address.host.includes(':') ? `[${address.host}]` : address.host}:${address.port}/`;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }
}

/**
 * `modemfleet echo`: serves until SIGINT/SIGTERM. Prints `listening on http://HOST:PORT/` once
 * listening (the port the kernel picked for port 0).
 */
export async function runEcho(
  listen: EchoListen,
  log: Logger,
  print: (line: string) => void = (line) => process.stdout.write(`${line}\n`),
): Promise<number> {
  const signal = shutdownSignal(log);
  const echo = new EchoServer(listen);
  try {
    const address = await echo.start();
    log.info({ listen: address }, 'echo endpoint listening');
    print(`listening on ${echo.url(address)}`);
    await signal.received;
    await echo.stop();
    return 0;
  } finally {
    signal.dispose();
  }
}
