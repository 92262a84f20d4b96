import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';

const script = fileURLToPath(new URL('./trafficBulk.ts', import.meta.url));

/** What a bulk client's socket wrote and read (the customer's side), and how it ended. */
export interface BulkResult {
  bytesWritten: number;
  bytesRead: number;
  payload: number;
  /** Every byte asked for arrived (the server closed after sending them). */
  complete: boolean;
  /** How it ended: an error code (ECONNREFUSED, ECONNRESET), or null. */
  error: string | null;
  /** `end`: an orderly end, or a reset Node reports as one; `close`: after an error. */
  how: string;
  /** Milliseconds from the start to the last data, and to the end. */
  lastData: number;
  ms: number;
}

/** The bulk server (test/helpers/trafficBulk.ts) inside namespace `ns`, listening on host:port. */
export async function startBulkServer(
  ns: string,
  host: string,
  port: number,
): Promise<{ stop(): Promise<void> }> {
  const child: ResultPromise = execa(
    'ip',
    ['netns', 'exec', ns, process.execPath, '--import', 'tsx', script, 'server', host, String(port)],
    { reject: false, stdout: 'pipe', stderr: 'inherit', buffer: false, detached: true },
  );
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('bulk server did not start')), 20_000);
    child.stdout?.once('data', () => {
      clearTimeout(timer);
      resolve();
    });
  });
  return {
    async stop() {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
      await child;
    },
  };
}

/** One bulk exchange from namespace `ns`: `up` bytes sent, `down` asked for. */
export async function bulk(
  ns: string,
  via: { kind: 'direct' | 'socks' | 'http'; host: string; port: number; user?: string; password?: string },
  target: { host: string; port: number },
  up: number,
  down: number,
  timeoutMs = 120_000,
): Promise<BulkResult> {
  const r = await execa(
    'ip',
    [
      'netns',
      'exec',
      ns,
      process.execPath,
      '--import',
      'tsx',
      script,
      'client',
      via.kind,
      via.host,
      String(via.port),
      via.user ?? '-',
      via.password ?? '-',
      target.host,
      String(target.port),
      String(up),
      String(down),
    ],
    { reject: false, timeout: timeoutMs },
  );
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as BulkResult;
  } catch {
    throw new Error(`bulk client: ${r.stderr || r.stdout || `exit ${String(r.exitCode)}`}`.slice(0, 500));
  }
}
