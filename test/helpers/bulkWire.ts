import { createServer, type Socket } from 'node:net';

/**
 * The bulk exchange's wire, shared by the traffic tests' bulk client and server
 * (test/helpers/trafficBulk.ts) and the throughput benchmark's peer (bench/throughputPeer.ts): a
 * connection starts with a 16-byte header, the byte counts it will upload and wants to download
 * (two big-endian 64-bit numbers), then sends the upload; the server, once it has read all of it,
 * sends the download and closes.
 */

export function bulkHeader(up: number, down: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(BigInt(up), 0);
  b.writeBigUInt64BE(BigInt(down), 8);
  return b;
}

/**
 * The server's side on `host:port`: per connection, the header and the upload read, then
 * `sendDown(socket, bytes)` (which ends the socket). Prints `ready` once listening; SIGTERM ends it.
 */
export function serveBulk(
  host: string,
  port: number,
  sendDown: (socket: Socket, bytes: number) => void,
  options: { noDelay?: boolean; backlog?: number } = {},
): void {
  const server = createServer((socket) => {
    if (options.noDelay) socket.setNoDelay(true);
    let head = Buffer.alloc(0);
    let up = -1;
    let down = 0;
    let got = 0;
    socket.on('error', () => socket.destroy());
    const onData = (chunk: Buffer): void => {
      if (up < 0) {
        head = Buffer.concat([head, chunk]);
        if (head.length < 16) return;
        up = Number(head.readBigUInt64BE(0));
        down = Number(head.readBigUInt64BE(8));
        chunk = head.subarray(16);
      }
      got += chunk.length;
      if (got >= up) {
        socket.off('data', onData);
        socket.resume();
        sendDown(socket, down);
      }
    };
    socket.on('data', onData);
  });
  server.listen({ host, port, ...(options.backlog ? { backlog: options.backlog } : {}) }, () =>
    process.stdout.write('ready\n'),
  );
  process.on('SIGTERM', () => process.exit(0));
}
