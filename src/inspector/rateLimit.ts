/**
 * Token buckets per key (a modem's IMEI): `burst` requests at once, then one per `refillMs`.
 * Bounded: at most `maxKeys` buckets are kept; the least recently used are forgotten first.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly options: { burst: number; refillMs: number; maxKeys?: number },
    private readonly now: () => number = Date.now,
  ) {}

  /** Takes a token: 0 when allowed, else the milliseconds until the next one. */
  take(key: string): number {
    const now = this.now();
    const { burst, refillMs } = this.options;
    const bucket = this.buckets.get(key) ?? { tokens: burst, at: now };
    const refilled = Math.min(burst, bucket.tokens + (now - bucket.at) / refillMs);
    if (refilled < 1) {
      this.buckets.set(key, { tokens: refilled, at: now });
      return Math.ceil((1 - refilled) * refillMs);
    }
    this.buckets.delete(key); // re-inserted last: the map's order is the order of use
    this.buckets.set(key, { tokens: refilled - 1, at: now });
    this.prune();
    return 0;
  }

  get size(): number {
    return this.buckets.size;
  }

  private prune(): void {
    const max = this.options.maxKeys ?? 10_000;
    for (const key of this.buckets.keys()) {
      if (this.buckets.size <= max) return;
      this.buckets.delete(key);
    }
  }
}
