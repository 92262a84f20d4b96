import { connect, type Socket } from 'node:net';
import { bulkHeader, proxyHandshake, serveBulk } from './bulkWire.js';

/**
 * Bulk bytes for traffic tests, run inside a namespace (`ip netns exec NS node --import tsx bulk.ts`):
 *
 * - `server HOST PORT` (the wire: test/helpers/bulkWire.ts): each connection sends a 16-byte header
 *   (upload and download byte counts), then that many bytes; the server reads them and answers with the
 *   download count's bytes, then closes. Prints `ready` once listening.
 * - `client direct|socks|http PROXY_HOST PROXY_PORT USER PASS TARGET_HOST TARGET_PORT UP DOWN`:
 *   through a SOCKS5 port (RFC 1929 login) or an HTTP port (CONNECT, basic auth, a 200 answer), or straight to the
 *   target; prints one JSON line with what this socket wrote and read (`bytesWritten`, `bytesRead`:
 *   the customer's side, handshake included), the payload received, and the error if it ended with
 *   one (a refused connection, a reset at a quota).
 */
const [mode, ...args] = process.argv.slice(2);

function sendDown(socket: Socket, bytes: number): void {
  const block = Buffer.alloc(64 * 1024, 0x5a);
  let left = bytes;
  const pump = (): void => {
    while (left > 0) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!socket.write(n === block.length ? block : block.subarray(0, n)))
        return void socket.once('drain', pump);
    }
    socket.end();
  };
  if (bytes === 0) socket.end();
  else pump();
}

async function client(): Promise<void> {
  const [
    kind = 'direct',
    proxyHost = '',
    proxyPort = '0',
    user = '',
    pass = '',
    host = '',
    port = '0',
    upText = '0',
    downText = '0',
  ] = args;
  const up = Number(upText);
  const down = Number(downText);
  const socket = connect({
    host: kind === 'direct' ? host : proxyHost,
    port: Number(kind === 'direct' ? port : proxyPort),
  });
  let buffer = Buffer.alloc(0);
  let payload = 0;
  let tunnelled = kind === 'direct';
  let waiter: (() => void) | undefined;
  let ended = false;
  let error: string | null = null;
  let how = 'close';
  let lastData = 0;
  const started = Date.now();
  const done = new Promise<void>((resolve) => {
    socket.on('close', () => {
      ended = true;
      waiter?.();
      resolve();
    });
  });
  socket.on('error', (err: NodeJS.ErrnoException) => (error = err.code ?? err.message));
  socket.on('data', (chunk: Buffer) => {
    lastData = Date.now() - started;
    if (tunnelled) payload += chunk.length;
    else buffer = Buffer.concat([buffer, chunk]);
    waiter?.();
  });
  socket.on('end', () => {
    how = 'end';
    ended = true;
    waiter?.();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    if (kind === 'socks' || kind === 'http')
      await proxyHandshake(
        {
          write: (data) => socket.write(data),
          buffered: () => buffer,
          take: (n) => (buffer = buffer.subarray(n)),
          more: async () => {
            if (ended) throw new Error('closed during the handshake');
            await new Promise<void>((r) => (waiter = r));
          },
        },
        kind,
        { user, password: pass },
        { host, port: Number(port) },
      );
    tunnelled = true;
    payload += buffer.length;
    buffer = Buffer.alloc(0);
    socket.write(bulkHeader(up, down));
    const block = Buffer.alloc(64 * 1024, 0xa5);
    for (let left = up; left > 0 && !ended;) {
      const n = Math.min(left, block.length);
      left -= n;
      if (!socket.write(n === block.length ? block : block.subarray(0, n)))
        await new Promise<void>((r) => socket.once('drain', r));
    }
  } catch (err) {
    error ??= (err as Error).message;
    socket.destroy();
  }
  await done;
  process.stdout.write(
    `${JSON.stringify({ bytesWritten: socket.bytesWritten, bytesRead: socket.bytesRead, payload, complete: payload >= down, error, how, lastData, ms: Date.now() - started })}\n`,
  );
}

if (mode === 'server') serveBulk(args[0] ?? '0.0.0.0', Number(args[1] ?? 0), sendDown);
else await client();
