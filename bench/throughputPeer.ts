import { connect, type Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { bulkHeader, proxyHandshake, serveBulk } from '../test/helpers/bulkWire.js';

/**
 * The two ends of the throughput benchmark (bench/throughput.ts), each run inside a namespace
 * (`ip netns exec NS node --import tsx bench/throughputPeer.ts ...`):
 *
 * - `server HOST PORT` (the lab's internet; the wire: test/helpers/bulkWire.ts, as the traffic
 *   tests' bulk server): each connection sends a 16-byte header (the byte counts
 *   it will upload and wants to download, two big-endian 64-bit numbers), then the upload; once it has
 *   all arrived the server sends the download and closes. Prints `ready` once listening.
 * - `agent` (a customer, or the farm itself for the direct path): reads one job per line on stdin
 *   (`PeerJob`, JSON) and answers each with one line (`PeerReply`): a bulk download or upload on one
 *   connection, or `count` short exchanges (`concurrency` at a time), through a SOCKS5 port (RFC 1929
 *   login, CONNECT to the target's address), an HTTP port (CONNECT, basic auth), or straight to the
 *   target. Times are taken here, from before the connect to the server's close (all of the upload
 *   read by the server, or all of the download received). `bytesWritten` and `bytesRead` are what the
 *   client's sockets wrote and read, handshakes included: what the port's customer sent and received.
 */

export type PeerVia =
  | { kind: 'direct'; localAddress?: string | undefined }
  | { kind: 'socks' | 'http'; host: string; port: number; user: string; password: string };

export interface PeerJob {
  id: number;
  via: PeerVia;
  target: { host: string; port: number };
  /** `down`/`up`: one connection moving `bytes`; `exchanges`: `count` connections of `up`/`down` bytes. */
  op: 'down' | 'up' | 'exchanges';
  bytes?: number;
  count?: number;
  concurrency?: number;
  up?: number;
  down?: number;
}

export interface PeerReply {
  id: number;
  ms: number;
  connections: number;
  bytesWritten: number;
  bytesRead: number;
  /** The first failure, if any (the figures are then not to be used). */
  error: string | null;
}

const BLOCK = Buffer.alloc(256 * 1024, 0x5a);

/** Writes `bytes` in blocks, waiting for drain; resolves when all is handed to the socket. */
async function pump(socket: Socket, bytes: number): Promise<void> {
  let left = bytes;
  while (left > 0 && !socket.destroyed) {
    const n = Math.min(left, BLOCK.length);
    left -= n;
    if (!socket.write(n === BLOCK.length ? BLOCK : BLOCK.subarray(0, n)))
      await new Promise<void>((resolve) => {
        socket.once('drain', resolve);
        socket.once('close', resolve);
      });
  }
}

/** One connection: through the port's handshake, then `up` bytes sent and `down` asked for. */
async function exchange(
  via: PeerVia,
  target: { host: string; port: number },
  up: number,
  down: number,
): Promise<{ bytesWritten: number; bytesRead: number; payload: number }> {
  const socket =
    via.kind === 'direct'
      ? connect({ host: target.host, port: target.port, localAddress: via.localAddress, noDelay: true })
      : connect({ host: via.host, port: via.port, noDelay: true });
  let buffer: Buffer = Buffer.alloc(0);
  let tunnelled = via.kind === 'direct';
  let payload = 0;
  let ended = false;
  let failure: Error | undefined;
  let waiter: (() => void) | undefined;
  const wake = (): void => {
    const w = waiter;
    waiter = undefined;
    w?.();
  };
  const closed = new Promise<void>((resolve) =>
    socket.on('close', () => {
      ended = true;
      wake();
      resolve();
    }),
  );
  socket.on('error', (err) => {
    failure ??= err;
    wake();
  });
  socket.on('end', () => {
    ended = true;
    wake();
  });
  socket.on('data', (chunk: Buffer) => {
    if (tunnelled) payload += chunk.length;
    else {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      wake();
    }
  });
  const more = async (): Promise<void> => {
    if (ended || failure) throw failure ?? new Error('closed during the handshake');
    await new Promise<void>((resolve) => (waiter = resolve));
  };
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    if (via.kind !== 'direct')
      await proxyHandshake(
        {
          write: (data) => socket.write(data),
          buffered: () => buffer,
          take: (n) => (buffer = buffer.subarray(n)),
          more,
        },
        via.kind,
        via,
        target,
      );
    tunnelled = true;
    payload += buffer.length;
    buffer = Buffer.alloc(0);
    socket.write(bulkHeader(up, down));
    await pump(socket, up);
    await closed;
  } catch (err) {
    failure ??= err as Error;
    socket.destroy();
    await closed;
  }
  if (failure) throw failure;
  if (payload < down) throw new Error(`short download: ${payload} of ${down} bytes`);
  return { bytesWritten: socket.bytesWritten, bytesRead: socket.bytesRead, payload };
}

async function runJob(job: PeerJob): Promise<PeerReply> {
  const reply: PeerReply = { id: job.id, ms: 0, connections: 0, bytesWritten: 0, bytesRead: 0, error: null };
  const add = (r: { bytesWritten: number; bytesRead: number }): void => {
    reply.connections++;
    reply.bytesWritten += r.bytesWritten;
    reply.bytesRead += r.bytesRead;
  };
  const started = performance.now();
  try {
    if (job.op === 'down') add(await exchange(job.via, job.target, 0, job.bytes ?? 0));
    else if (job.op === 'up') add(await exchange(job.via, job.target, job.bytes ?? 0, 0));
    else {
      let next = 0;
      const count = job.count ?? 0;
      const worker = async (): Promise<void> => {
        while (next < count) {
          next++;
          add(await exchange(job.via, job.target, job.up ?? 0, job.down ?? 0));
        }
      };
      await Promise.all(Array.from({ length: Math.max(1, job.concurrency ?? 1) }, worker));
    }
  } catch (err) {
    reply.error = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
  reply.ms = performance.now() - started;
  return reply;
}

function agent(): void {
  const lines = createInterface({ input: process.stdin });
  let queue = Promise.resolve();
  lines.on('line', (line) => {
    if (!line.trim()) return;
    queue = queue.then(async () => {
      const reply = await runJob(JSON.parse(line) as PeerJob);
      process.stdout.write(`${JSON.stringify(reply)}\n`);
    });
  });
  lines.on('close', () => void queue.then(() => process.exit(0)));
  process.stdout.write('ready\n');
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server')
  serveBulk(
    args[0] ?? '0.0.0.0',
    Number(args[1] ?? 0),
    (socket, bytes) => void pump(socket, bytes).then(() => socket.end()),
    { noDelay: true, backlog: 1024 },
  );
else if (mode === 'agent') agent();
else {
  process.stderr.write('usage: throughputPeer.ts server HOST PORT | agent\n');
  process.exit(2);
}
