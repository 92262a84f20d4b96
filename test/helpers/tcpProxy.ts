import { createServer, connect, type Server, type Socket } from 'node:net';

/**
 * A TCP forwarder between a client and PostgreSQL that can go silent: `freeze()` stops forwarding
 * in both directions while keeping every socket open — a half-open connection as a dead NAT or a
 * pulled cable leaves it. New connections after `thaw()` work normally.
 */
export class TcpProxy {
  port = 0;
  private server: Server | undefined;
  private readonly pairs = new Set<{ a: Socket; b: Socket; frozen: boolean }>();
  private down = false;
  constructor(private readonly targetPort: number) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      if (this.down) {
        client.destroy();
        return;
      }
      const upstream = connect(this.targetPort, '127.0.0.1');
      const pair = { a: client, b: upstream, frozen: false };
      this.pairs.add(pair);
      client.on('data', (d) => {
        if (!pair.frozen) upstream.write(d);
      });
      upstream.on('data', (d) => {
        if (!pair.frozen) client.write(d);
      });
      const close = (): void => {
        client.destroy();
        upstream.destroy();
        this.pairs.delete(pair);
      };
      client.on('close', close);
      upstream.on('close', close);
      client.on('error', close);
      upstream.on('error', close);
    });
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    const address = this.server.address();
    this.port = typeof address === 'object' && address ? address.port : 0;
  }

  /** Existing connections go silent (no FIN, no RST). */
  freeze(): void {
    for (const p of this.pairs) p.frozen = true;
  }

  /** The server is gone: every connection is dropped and new ones are refused until `up()`. */
  cut(): void {
    this.down = true;
    for (const p of this.pairs) {
      p.a.destroy();
      p.b.destroy();
    }
  }

  up(): void {
    this.down = false;
  }

  get connections(): number {
    return this.pairs.size;
  }

  async stop(): Promise<void> {
    for (const p of this.pairs) {
      p.a.destroy();
      p.b.destroy();
    }
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
