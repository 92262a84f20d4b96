import { getViaHttpProxy, getViaSocks5 } from '../../net/proxyClient.js';

/**
 * Fetches URL through one proxy port and prints the body (the echo server's view of the source
 * address), run inside a namespace: `probe.ts socks|http HOST PORT USER PASS URL`; or straight
 * through the namespace's own routes: `probe.ts direct URL`. Exit 1 with the error on stderr when
 * the request fails.
 */
const args = process.argv.slice(2);
try {
  if (args[0] === 'direct') {
    const response = await fetch(args[1] ?? '', { signal: AbortSignal.timeout(3_000) });
    process.stdout.write(response.ok ? await response.text() : `HTTP ${response.status}`);
    if (!response.ok) process.exitCode = 1;
  } else {
    const [kind, host = '', port = '0', user = '', password = '', url = ''] = args;
    const endpoint = { host, port: Number(port), user, password };
    const answer =
      kind === 'socks'
        ? await getViaSocks5(endpoint, url, 3_000)
        : await getViaHttpProxy(endpoint, url, 3_000);
    process.stdout.write(answer.status === 200 ? answer.body : `HTTP ${answer.status}`);
  }
} catch (err) {
  process.stderr.write(`${(err as Error).message}\n`);
  process.exitCode = 1;
}
