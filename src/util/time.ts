export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason as Error);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });

/** Exponential backoff with a cap and optional jitter (0..1 of the delay). */
export function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  jitter = 0,
  rand = Math.random,
): number {
  const raw = Math.min(capMs, baseMs * 2 ** Math.max(0, attempt));
  return Math.round(raw * (1 - jitter + jitter * rand()));
}

/**
 * Whether `promise` settles within `ms`. The timer is cleared either way: a plain race with
 * `sleep` leaves its timer pending, which keeps the process alive after everything else stopped.
 */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([promise.then(() => true as const), expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * `promise`, or a rejection with `error()` once `ms` have passed without it settling. The timer is
 * cleared either way (`unref`: it does not keep the process alive meanwhile). A later rejection of
 * the abandoned promise is not unhandled: whoever wants it attaches their own handler.
 */
export function rejectAfter<T>(
  promise: Promise<T>,
  ms: number,
  error: () => Error,
  options: { unref?: boolean } = {},
): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(error()), ms);
    if (options.unref) timer.unref();
  });
  promise.catch(() => undefined);
  return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
}
