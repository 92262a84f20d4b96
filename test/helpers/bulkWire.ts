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

/** What a client's handshake through a port needs of its connection. */
export interface HandshakeIo {
  write(data: Buffer | string): void;
  /** The bytes received and not taken yet. */
  buffered(): Buffer;
  /** Takes the first `n` of them. */
  take(n: number): void;
  /** Resolves when more bytes have arrived; throws if the connection has ended. */
  more(): Promise<void>;
}

/**
 * Through a port's handshake to an IPv4 `target`: SOCKS5 (greeting, RFC 1929 login, CONNECT, one
 * round trip each, as curl does) or HTTP CONNECT with basic auth, which must answer 200. Throws
 * with what refused it.
 */
export async function proxyHandshake(
  io: HandshakeIo,
  kind: 'socks' | 'http',
  login: { user: string; password: string },
  target: { host: string; port: number },
): Promise<void> {
  const read = async (n: number): Promise<Buffer> => {
    while (io.buffered().length < n) await io.more();
    const out = io.buffered().subarray(0, n);
    io.take(n);
    return out;
  };
  if (kind === 'socks') {
    const u = Buffer.from(login.user);
    const p = Buffer.from(login.password);
    io.write(Buffer.from([5, 1, 2]));
    await read(2);
    io.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
    if ((await read(2))[1] !== 0) throw new Error('socks login refused');
    const a = target.host.split('.').map(Number);
    io.write(Buffer.from([5, 1, 0, 1, ...a, target.port >> 8, target.port & 255]));
    const reply = await read(10);
    if (reply[1] !== 0) throw new Error(`socks connect failed (${reply[1]})`);
    return;
  }
  const auth = Buffer.from(`${login.user}:${login.password}`).toString('base64');
  const t = `${target.host}:${target.port}`;
  io.write(`CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`);
  let end: number;
  while ((end = io.buffered().indexOf('\r\n\r\n')) < 0) await io.more();
  const head = io.buffered().subarray(0, end).toString('latin1');
  io.take(end + 4);
  if (!/^HTTP\/1\.[01] 200/.test(head)) throw new Error(`http connect refused: ${head.slice(0, 40)}`);
}
