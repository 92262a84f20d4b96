import { fileURLToPath } from 'node:url';
import { run } from '../process/run.js';

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
 * What the echo server sees from namespace `netns` itself, through its own (management) routes:
 * the host's public address, which no modem port may show.
 */
export async function directInNamespace(netns: string, url: string): Promise<string | null> {
  const r = await run(
    'ip',
    ['netns', 'exec', netns, process.execPath, '--import', 'tsx', probeScript, 'direct', url],
    { timeoutMs: 15_000 },
  );
  return r.ok ? r.stdout.trim() : null;
}
