import { inspect } from 'node:util';

/**
 * The one polling helper of the tests: calls `check` (sync or async) until it returns something
 * truthy, and resolves with that value; after `timeoutMs` it fails with a message that says what
 * was awaited, for how long, and what `check` returned last. An error thrown by `check` ends the
 * wait at once (a broken check is not a slow one).
 *
 *   await until(() => detector.present.length === 4, { timeoutMs: 3_000, message: 'four modems' });
 *   const done = await until(async () => {
 *     const c = await store.command(id);
 *     return c?.status === 'done' && c;
 *   });
 *
 * `until(check, timeoutMs, message)` is the same call in the positional form test/helpers/farm.ts
 * has always exported.
 */
export interface UntilOptions {
  /** Default 20 s. */
  timeoutMs?: number;
  /** Pause between checks; default 50 ms. */
  intervalMs?: number;
  /** What is awaited, for the timeout message; a function is asked only then (e.g. to dump state). */
  message?: string | (() => string | Promise<string>);
}

/** The error of a wait that timed out (an error thrown by the check itself is passed on as is). */
export class UntilTimeout extends Error {
  override name = 'UntilTimeout';
}

/** `.catch(ignoreTimeout)`: a wait that may run out (the test goes on either way). */
export function ignoreTimeout(err: unknown): void {
  if (!(err instanceof UntilTimeout)) throw err;
}

type Truthy<T> = Exclude<T, false | 0 | '' | null | undefined>;

export async function until<T>(check: () => T | Promise<T>, options?: UntilOptions): Promise<Truthy<T>>;
export async function until<T>(
  check: () => T | Promise<T>,
  timeoutMs?: number,
  message?: UntilOptions['message'],
): Promise<Truthy<T>>;
export async function until<T>(
  check: () => T | Promise<T>,
  options: UntilOptions | number = {},
  message?: UntilOptions['message'],
): Promise<Truthy<T>> {
  const o: UntilOptions =
    typeof options === 'number'
      ? { timeoutMs: options, ...(message === undefined ? {} : { message }) }
      : options;
  const timeoutMs = o.timeoutMs ?? 20_000;
  const intervalMs = o.intervalMs ?? 50;
  const started = Date.now();
  for (;;) {
    const value = await check();
    if (value) return value as Truthy<T>;
    if (Date.now() - started > timeoutMs) {
      const what =
        typeof o.message === 'function'
          ? await o.message()
          : (o.message ?? check.toString().replace(/\s+/g, ' ').slice(0, 200));
      const last =
        typeof value === 'boolean' ? '' : ` (last: ${inspect(value, { depth: 2, breakLength: Infinity })})`;
      throw new UntilTimeout(`timed out after ${timeoutMs} ms waiting for ${what}${last}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
