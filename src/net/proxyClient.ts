import { connect, isIPv4, type Socket } from 'node:net';
import { ModemfleetError } from '../util/errors.js';

/**
 * A minimal HTTP/1.0 GET through one of our own proxy ports, for the egress guard and rotation
 * checks: it sees what a customer sees. Plain http:// URLs to an IPv4 host only (the echo server);
 * answers are bounded.
 */
export interface ProxyEndpoint {
  host: string;
  port: number;
  user: string;
  password: string;
}

export interface EchoAnswer {
  status: number;
  body: string;
}

const MAX_ANSWER = 16 * 1024;

function target(url: string): { host: string; port: number; path: string } {
  const u = new URL(url);
  if (u.protocol !== 'http:' || !isIPv4(u.hostname))
    throw new ModemfleetError('invalid_echo_url', 'the echo URL must be http:// with an IPv4 address');
  return { host: u.hostname, port: Number(u.port || 80), path: `${u.pathname}${u.search}` };
}

function exchange(
  socket: Socket,
  timeoutMs: number,
  steps: (read: (n: number) => Promise<Buffer>) => Promise<void>,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    let waiter: (() => void) | undefined;
    let ended = false;
    const fail = (err: Error): void => {
      socket.destroy();
      reject(err);
    };
    socket.setTimeout(timeoutMs, () =>
      fail(new ModemfleetError('proxy_timeout', 'the proxy did not answer in time')),
    );
    socket.on('error', fail);
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      if (buffer.length > MAX_ANSWER) fail(new ModemfleetError('proxy_answer_too_long', 'answer too long'));
      waiter?.();
    });
    socket.on('end', () => {
      ended = true;
      waiter?.();
    });
    const read = async (n: number): Promise<Buffer> => {
      while (buffer.length < n) {
        if (ended) throw new ModemfleetError('proxy_closed', 'the proxy closed the connection');
        await new Promise<void>((r) => (waiter = r));
      }
      const out = buffer.subarray(0, n);
      buffer = buffer.subarray(n);
      return out;
    };
    socket.once('connect', () => {
      steps(read)
        .then(async () => {
          while (!ended) await new Promise<void>((r) => (waiter = r));
          resolve(buffer.toString('latin1'));
        })
        .catch((err: unknown) => fail(err instanceof Error ? err : new Error(String(err))));
    });
  });
}

function parseHttp(raw: string): EchoAnswer {
  const m = /^HTTP\/1\.[01] (\d{3})[^\r\n]*\r\n([\s\S]*?)\r\n\r\n([\s\S]*)$/.exec(raw);
  if (!m)
    throw new ModemfleetError('proxy_bad_answer', `not an HTTP answer: ${JSON.stringify(raw.slice(0, 80))}`);
  return { status: Number(m[1]), body: m[3] ?? '' };
}

/** GET `url` through the proxy's SOCKS5 port (RFC 1928/1929 username and password). */
export async function getViaSocks5(
  proxy: ProxyEndpoint,
  url: string,
  timeoutMs = 5_000,
): Promise<EchoAnswer> {
  const t = target(url);
  const socket = connect({ host: proxy.host, port: proxy.port });
  const raw = await exchange(socket, timeoutMs, async (read) => {
    socket.write(Buffer.from([5, 1, 2]));
    const [ver, method] = await read(2);
    if (ver !== 5 || method !== 2) throw new ModemfleetError('socks_refused', 'no username/password method');
    const user = Buffer.from(proxy.user);
    const pass = Buffer.from(proxy.password);
    socket.write(Buffer.concat([Buffer.from([1, user.length]), user, Buffer.from([pass.length]), pass]));
    const [, status] = await read(2);
    if (status !== 0) throw new ModemfleetError('socks_auth_failed', 'the proxy refused the credentials');
    const addr = t.host.split('.').map(Number);
    socket.write(Buffer.from([5, 1, 0, 1, ...addr, t.port >> 8, t.port & 255]));
    const head = await read(4);
    if (head[1] !== 0)
      throw new ModemfleetError('socks_connect_failed', `the proxy could not connect (code ${head[1]})`);
    await read(head[3] === 1 ? 6 : head[3] === 4 ? 18 : 0);
    socket.write(`GET ${t.path} HTTP/1.0\r\nHost: ${t.host}\r\n\r\n`);
  });
  return parseHttp(raw);
}

/** GET `url` through the proxy's HTTP port (absolute URI, basic auth). */
export async function getViaHttpProxy(
  proxy: ProxyEndpoint,
  url: string,
  timeoutMs = 5_000,
): Promise<EchoAnswer> {
  target(url);
  const socket = connect({ host: proxy.host, port: proxy.port });
  const auth = Buffer.from(`${proxy.user}:${proxy.password}`).toString('base64');
  const raw = await exchange(socket, timeoutMs, (_read) => {
    socket.write(
      `GET ${url} HTTP/1.0\r\nHost: ${new URL(url).host}\r\nProxy-Authorization: Basic ${auth}\r\n\r\n`,
    );
    return Promise.resolve();
  });
  return parseHttp(raw);
}
