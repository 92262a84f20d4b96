import { isIP } from 'node:net';
import { fileURLToPath } from 'node:url';
import { run } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';

const probeScript = fileURLToPath(new URL('../sim/lab/probe.ts', import.meta.url));

/**
 * What the echo server sees through one proxy port that listens inside network namespace `netns`
 * (a socket cannot be opened there from this process): a short-lived probe runs in the namespace.
 * Resolves with the source address, or null when the request fails.
 */
export async function probeInNamespace(
  netns: string,
  kind: 'socks' | 'http',
  port: number,
  user: string,
  password: string,
  url: string,
): Promise<string | null> {
  const r = await run(
    'ip',
    [
      'netns',
      'exec',
      netns,
      process.execPath,
      '--import',
      'tsx',
      probeScript,
      kind,
      '127.0.0.1',
      String(port),
      user,
      password,
      url,
    ],
    { timeoutMs: 15_000 },
  );
  return r.ok ? r.stdout.trim() : null;
}

/**
 * What the echo server at `url` sees of a request made inside network namespace `netns` from a
 * socket bound to `localAddress` (a modem's address: policy routing sends it out of that modem's
 * link). Resolves with the answer, or null when the request fails.
 */
export async function directProbeInNamespace(
  netns: string,
  localAddress: string,
  url: string,
): Promise<string | null> {
  if (!isIP(localAddress)) throw new ModemfleetError('invalid_address', 'probe: not an IP address');
  const r = await run(
    'ip',
    ['netns', 'exec', netns, process.execPath, '--import', 'tsx', probeScript, 'direct', localAddress, url],
    { timeoutMs: 15_000 },
  );
  return r.ok ? r.stdout.trim() : null;
}

/**
 * What the echo server sees from namespace `netns` itself, through its own (management) routes:
 * the host's public address, which no modem port may show.
 */
export function directInNamespace(netns: string, url: string): Promise<string | null> {
  return directProbeInNamespace(netns, '0.0.0.0', url);
}
