import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  /** The raw body, as signed. */
  body: string;
}

/**
 * A real HTTP receiver for webhook tests: records every POST; `down()` closes it (connection
 * refused, its own outage) and `up()` listens again on the same port; `status` is what it answers.
 */
export class WebhookReceiver {
  readonly received: Received[] = [];
  status = 200;
  /** Extra headers of every answer (e.g. a `location` with a 3xx status). */
  headers: Record<string, string> = {};
  private server: Server | undefined;
  private portNumber = 0;

  get port(): number {
    return this.portNumber;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.portNumber}${path}`;
  }

  async up(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.received.push({
          path: req.url ?? '',
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        });
        res.writeHead(this.status, { 'content-type': 'text/plain', connection: 'close', ...this.headers });
        res.end(this.status < 300 ? 'ok' : 'receiver says no');
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.portNumber, '127.0.0.1', () => resolve());
    });
    this.portNumber = (server.address() as AddressInfo).port;
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Bodies received on `path`, parsed. */
  bodies<T = Record<string, unknown>>(path: string): T[] {
    return this.received.filter((r) => r.path === path).map((r) => JSON.parse(r.body) as T);
  }
}
