import { run } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';

/**
 * The `ip` command (iproute2), the only way modemfleet changes routing. Always an argument array
 * (no shell), optionally inside a named network namespace (`ip -n NS`), with a timeout: a hung `ip`
 * is killed and reported, never waited on forever.
 */
export interface IpOptions {
  /** Network namespace name; unset: the supervisor's own. */
  netns?: string | undefined;
  timeoutMs?: number;
  /** The program; tests may point at a wrapper. */
  bin?: string;
}

export class IpError extends ModemfleetError {
  constructor(
    message: string,
    readonly args: readonly string[],
    readonly stderr: string,
    code = 'ip_failed',
  ) {
    super(code, message);
    this.name = 'IpError';
  }
}

const NETNS = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** A network namespace name as `ip netns` takes it; throws `invalid_netns` otherwise. */
export function checkNetns(name: string): string {
  if (!NETNS.test(name)) throw new ModemfleetError('invalid_netns', 'invalid network namespace name');
  return name;
}

function base(options: IpOptions): string[] {
  if (options.netns === undefined) return [];
  return ['-n', checkNetns(options.netns)];
}

/** Runs `ip ARGS`; resolves with stdout, rejects with an IpError naming the command and stderr. */
export async function ip(args: readonly string[], options: IpOptions = {}): Promise<string> {
  const full = [...base(options), ...args];
  // a timed-out `ip` gets SIGTERM, then SIGKILL (a stuck one may ignore TERM)
  const result = await run(options.bin ?? 'ip', full, { timeoutMs: options.timeoutMs ?? 5_000 });
  if (result.timedOut) throw new IpError(`ip ${full.join(' ')} timed out`, full, result.stderr, 'ip_timeout');
  if (result.exitCode !== 0)
    throw new IpError(
      `ip ${full.join(' ')} failed: ${result.stderr.trim().slice(0, 300)}`,
      full,
      result.stderr,
    );
  return result.stdout;
}

/** `ip -batch -`: many commands in one process (~4 ms per `ip` call otherwise). */
export async function ipBatch(lines: readonly string[], options: IpOptions = {}): Promise<void> {
  if (lines.length === 0) return;
  for (const line of lines)
    if (/[\n\r]/.test(line)) throw new ModemfleetError('invalid_ip_command', 'ip batch line with a newline');
  const full = [...base(options), '-batch', '-'];
  const result = await run(options.bin ?? 'ip', full, {
    timeoutMs: options.timeoutMs ?? 10_000,
    input: `${lines.join('\n')}\n`,
  });
  if (result.timedOut)
    throw new IpError(`ip -batch (${lines.length} commands) timed out`, full, result.stderr, 'ip_timeout');
  if (result.exitCode !== 0)
    throw new IpError(
      `ip -batch failed: ${result.stderr.trim().slice(0, 300)}`,
      [...full, ...lines],
      result.stderr,
    );
}

/** `ip -json ...` parsed. */
export async function ipJson<T>(args: readonly string[], options: IpOptions = {}): Promise<T[]> {
  const out = await ip(['-json', ...args], options);
  if (out.trim() === '') return [];
  try {
    return JSON.parse(out) as T[];
  } catch {
    throw new IpError(`ip -json ${args.join(' ')}: unreadable output`, args, out.slice(0, 200));
  }
}
