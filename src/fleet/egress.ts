import { isIP } from 'node:net';
import { getViaSocks5 } from '../net/proxyClient.js';

export interface EgressOptions {
  /**
   * Echo endpoints (`http://IPV4[:PORT]/...`), each answering with the client's address as plain
   * text; the first that answers counts. A self-hosted one (`modemfleet echo`) is recommended.
   */
  urls?: readonly string[] | undefined;
  /** One endpoint (the older form of `urls`). */
  url?: string | undefined;
  intervalMs: number;
  /**
   * Readings per public address (default 2, and one more when they differ): a carrier that NATs
   * every connection to another address must not look like a new address on every check.
   */
  samples?: number | undefined;
  /** How a port is reached (default: a SOCKS5 request from here; in a namespace, from inside it). */
  probe?: ((port: ProxyEndpoint, url: string) => Promise<string | null>) | undefined;
  /**
   * A request straight from the host through its own (management) route: the host's own public
   * address, which no modem port may show (default: an HTTP GET from this process).
   */
  probeDirect?: ((url: string) => Promise<string | null>) | undefined;
}

export interface ProxyEndpoint {
  socksPort: number;
  user: string;
  password: string;
}

/** The echo endpoints of `egress`, in order. */
export function echoUrls(egress: EgressOptions): string[] {
  return [...(egress.urls ?? []), ...(egress.url ? [egress.url] : [])];
}

/** An echo answer: an IP address, or nothing. */
const address = (body: string): string | null => {
  const text = body.trim();
  return isIP(text) !== 0 ? text : null;
};

/** The address the first echo endpoint that answers with one reports (`ask` per URL); null: none did. */
async function firstAnswer(
  egress: EgressOptions,
  ask: (url: string) => Promise<string | null>,
): Promise<string | null> {
  for (const url of echoUrls(egress)) {
    const seen = await ask(url);
    const found = seen === null ? null : address(seen);
    if (found) return found;
  }
  return null;
}

/** What the first answering echo endpoint sees through a modem's own SOCKS port; null: none answered. */
export function probeEgress(egress: EgressOptions, endpoint: ProxyEndpoint): Promise<string | null> {
  return firstAnswer(egress, (url) =>
    egress.probe
      ? egress.probe(endpoint, url)
      : getViaSocks5(
          { host: '127.0.0.1', port: endpoint.socksPort, user: endpoint.user, password: endpoint.password },
          url,
        ).then(
          (answer) => (answer.status === 200 ? answer.body : null),
          () => null,
        ),
  );
}

/** A reading of the public address through a port. */
export interface PublicReading {
  /** The address seen most often (null: no endpoint answered). */
  address: string | null;
  /** Every reading agreed: false on a carrier that NATs each connection to another address. */
  stable: boolean;
  samples: string[];
}

/**
 * The public address through a port: `samples` readings (default 2), one more when they differ; the
 * address seen most often (the first on a tie) and whether they all agreed.
 */
export async function readPublicAddress(
  egress: EgressOptions,
  endpoint: ProxyEndpoint,
): Promise<PublicReading> {
  const wanted = Math.max(1, egress.samples ?? 2);
  const samples: string[] = [];
  for (let i = 0; i < wanted + 1; i++) {
    if (i === wanted && new Set(samples).size <= 1) break;
    const seen = await probeEgress(egress, endpoint);
    if (seen === null) break;
    samples.push(seen);
  }
  if (samples.length === 0) return { address: null, stable: false, samples };
  const counts = new Map<string, number>();
  for (const s of samples) counts.set(s, (counts.get(s) ?? 0) + 1);
  const best = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? null;
  return { address: best, stable: counts.size === 1, samples };
}

/** What the first answering echo endpoint sees from the host itself; null: none answered. */
export function probeDirect(egress: EgressOptions): Promise<string | null> {
  return firstAnswer(egress, (url) =>
    egress.probeDirect
      ? egress.probeDirect(url)
      : fetch(url, { signal: AbortSignal.timeout(5_000) }).then(
          async (r) => (r.ok ? await r.text() : null),
          () => null,
        ),
  );
}

/**
 * The host's own public address (through its management route), learned at start and again when
 * asked (at most every `minIntervalMs`): a modem port that shows it leaks. Also tells whether the
 * echo endpoints answer at all, so a dead endpoint is not taken for dead modems.
 */
export class HostEgress {
  private address: string | null = null;
  private learnedAt = 0;
  private learning: Promise<string | null> | undefined;

  constructor(
    private readonly egress: EgressOptions,
    private readonly minIntervalMs = 60_000,
  ) {}

  /** The host's public address as last learned (null: unknown). */
  get current(): string | null {
    return this.address;
  }

  /** Asks the echo endpoints directly (coalesced, rate-limited); null when none answers. */
  learn(force = false): Promise<string | null> {
    if (!force && this.learnedAt > 0 && Date.now() - this.learnedAt < this.minIntervalMs)
      return Promise.resolve(this.address);
    this.learning ??= probeDirect(this.egress)
      .then((seen) => {
        this.learnedAt = Date.now();
        if (seen !== null) this.address = seen;
        return seen;
      })
      .finally(() => {
        this.learning = undefined;
      });
    return this.learning;
  }

  /** A port that shows this address egresses through the host, not its modem. */
  isHost(seen: string): boolean {
    return this.address !== null && seen === this.address;
  }
}
