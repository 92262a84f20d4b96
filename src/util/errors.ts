/** The one way to turn anything thrown into an Error. */
export function coerceError(value: unknown): Error {
  if (value instanceof Error) return value;
  if (value === undefined) return new Error('unknown error (undefined was thrown)');
  if (typeof value === 'string') return new Error(value);
  if (
    typeof value === 'number' ||
    typeof value === 'boolean' ||
    typeof value === 'bigint' ||
    typeof value === 'symbol'
  ) {
    return new Error(String(value));
  }
  try {
    return new Error(JSON.stringify(value) ?? 'unknown error');
  } catch {
    return new Error('unknown error (unserialisable value thrown)');
  }
}

/** An error an operator can act on: a stable code and a one-line message. */
export class ModemfleetError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ModemfleetError';
    this.code = code;
  }
}

/** Bad configuration or input: reported as `path: message` lines. */
export class ConfigError extends ModemfleetError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super('config_invalid', `invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
    this.problems = problems;
  }
}

/** Message of an error and of its causes, on one line. */
export function errorChain(value: unknown): string {
  const parts: string[] = [];
  let current: unknown = value;
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    const err = coerceError(current);
    parts.push(err.message);
    current = err.cause;
  }
  return parts.join(': ');
}
