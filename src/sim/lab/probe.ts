import { getViaHttpProxy, getViaSocks5 } from '../../net/proxyClient.js';

/**
 * Fetches URL through one proxy port and prints the body (the echo server's view of the source
 * address), run inside the farm namespace by tests: `probe.ts socks|http HOST PORT USER PASS URL`.
 * Exit 1 with the error on stderr when the request fails.
 */
const [kind, host = '', port = '0', user = '', password = '', url = ''] = process.argv.slice(2);
const endpoint = { host, port: Number(port), user, password };
try {
  const answer =
    kind === 'socks' ? await getViaSocks5(endpoint, url, 3_000) : await getViaHttpProxy(endpoint, url, 3_000);
  process.stdout.write(answer.status === 200 ? answer.body : `HTTP ${answer.status}`);
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exitCode = 1;
}
