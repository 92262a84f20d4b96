import { connect, createServer, type Socket } from 'node:net';

/**
 * Bulk transfers for the speed-limit e2e, run inside a lab namespace (`ip netns exec NS node
 * --import tsx bulk.ts ...`):
 * - `server HOST PORT`: a client that sends `G` gets bytes as fast as it reads them (`get` is
 *   printed on stdout when one starts); of one that
 *   sends `P`, a byte of SECONDS and then streams, what arrived here in SECONDS from its first byte
 *   (not what was written into some socket buffer) is printed on stdout: one JSON line
 *   `{bytes, buckets}`. Prints `ready` once listening.
 * - `hold HOST PORT`: answers every chunk with `ok` and keeps the connection open (a customer's
 *   long-lived tunnel). Prints `ready` once listening.
 * - `client PROXYPORT USER PASSWORD HOST PORT get|put SECONDS [BUCKETMS]`: through the SOCKS5 port
 *   on 127.0.0.1, downloads or uploads for SECONDS and prints `{start, bytes, buckets}` (bytes per
 *   bucket of BUCKETMS, default 500, from `start`, the epoch ms the transfer began).
 */

const chunk = Buffer.alloc(64 * 1024, 0x5a);

function serve(host: string, port: number): void {
  const server = createServer((s) => {
    s.on('error', () => undefined);
    s.once('data', (first: Buffer) => {
      if (first[0] === 0x47) {
        process.stdout.write('get\n');
        const pump = (): void => {
          while (!s.destroyed && s.write(chunk));
        };
        s.on('drain', pump);
        pump();
        return;
      }
      const start = Date.now();
      const buckets: number[] = [];
      let bytes = 0;
      const count = (d: Buffer): void => {
        bytes += d.length;
        const i = Math.floor((Date.now() - start) / 500);
        buckets[i] = (buckets[i] ?? 0) + d.length;
      };
      const seconds = first[1] ?? 10;
      count(first.subarray(2));
      s.on('data', count);
      setTimeout(() => {
        s.off('data', count);
        s.resume();
        process.stdout.write(`${JSON.stringify({ bytes, buckets: Array.from(buckets, (b) => b ?? 0) })}\n`);
      }, seconds * 1000);
    });
  });
  server.listen(port, host, () => process.stdout.write('ready\n'));
}

function socks5(port: number, user: string, password: string, host: string, target: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    let got = Buffer.alloc(0);
    let step = 0;
    s.on('error', reject);
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (step === 0 && got.length >= 2) {
        const method = got[1];
        got = got.subarray(2);
        step = method === 2 ? 1 : 2;
        if (method === 2) {
          const u = Buffer.from(user);
          const p = Buffer.from(password);
          s.write(Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]));
        } else if (method !== 0) return reject(new Error(`socks method ${method}`));
      }
      if (step === 1 && got.length >= 2) {
        if (got[1] !== 0) return reject(new Error('socks auth refused'));
        got = got.subarray(2);
        step = 2;
      }
      if (step === 2) {
        const octets = host.split('.').map(Number);
        s.write(Buffer.from([5, 1, 0, 1, ...octets, target >> 8, target & 255]));
        step = 3;
      }
      if (step === 3 && got.length >= 10) {
        if (got[1] !== 0) return reject(new Error(`socks connect ${got[1]}`));
        s.off('data', onData);
        resolve(s);
      }
    };
    s.on('data', onData);
    s.write(Buffer.from([5, 1, 2]));
  });
}

async function client(args: string[]): Promise<void> {
  const [proxyPort, user, password, host, port, mode, seconds, bucketMs] = args;
  const s = await socks5(Number(proxyPort), user ?? '', password ?? '', host ?? '', Number(port));
  const ms = Number(seconds) * 1000;
  const bucket = Number(bucketMs ?? 500);
  const start = Date.now();
  if (mode === 'get') {
    const buckets: number[] = [];
    let bytes = 0;
    s.on('data', (d: Buffer) => {
      const i = Math.floor((Date.now() - start) / bucket);
      if (i * bucket >= ms) return;
      bytes += d.length;
      buckets[i] = (buckets[i] ?? 0) + d.length;
    });
    s.write('G');
    await new Promise((r) => setTimeout(r, ms));
    process.stdout.write(
      `${JSON.stringify({ start, bytes, buckets: Array.from(buckets, (b) => b ?? 0) })}\n`,
    );
    s.destroy();
    return;
  }
  s.write(Buffer.from([0x50, Number(seconds)]));
  let open = true;
  const pump = (): void => {
    while (open && s.write(chunk));
  };
  s.on('drain', pump);
  pump();
  await new Promise((r) => setTimeout(r, ms));
  open = false;
  // what is still buffered is dropped: the server counts what arrived while it was sending
  s.destroy();
  process.stdout.write('{}\n');
}

function hold(host: string, port: number): void {
  const server = createServer((s) => {
    s.on('error', () => undefined);
    s.on('data', () => s.write('ok'));
  });
  server.listen(port, host, () => process.stdout.write('ready\n'));
}

const [mode, ...rest] = process.argv.slice(2);
if (mode === 'server') serve(rest[0] ?? '0.0.0.0', Number(rest[1]));
else if (mode === 'hold') hold(rest[0] ?? '0.0.0.0', Number(rest[1]));
else
  client(rest).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
