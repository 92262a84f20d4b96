import { request } from 'node:http';
import { getViaHttpProxy, getViaSocks5 } from '../../net/proxyClient.js';

/**
 * Fetches URL and prints the body (the echo server's view of the source address), run inside the
 * farm namespace by tests: through one proxy port, `probe.ts socks|http HOST PORT USER PASS URL`,
 * or straight from a socket bound to a local address, `probe.ts direct LOCAL_ADDRESS URL`.
 * Exit 1 with the error on stderr when the request fails.
 */
const [kind, ...args] = process.argv.slice(2);

function direct(localAddress: string, url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { localAddress, timeout: 3_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk.slice(0, 1_000)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

try {
  let answer: { status: number; body: string };
  if (kind === 'direct') {
    const [localAddress = '', url = ''] = args;
    answer = await direct(localAddress, url);
  } else {
    const [host = '', port = '0', user = '', password = '', url = ''] = args;
    const endpoint = { host, port: Number(port), user, password };
    answer =
      kind === 'socks'
        ? await getViaSocks5(endpoint, url, 3_000)
        : await getViaHttpProxy(endpoint, url, 3_000);
  }
  process.stdout.write(answer.status === 200 ? answer.body : `HTTP ${answer.status}`);
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exitCode = 1;
}
