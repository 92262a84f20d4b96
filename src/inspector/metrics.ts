import { Counter, Gauge, type Registry } from 'prom-client';

/**
 * Metrics whose values live elsewhere (the database, the supervisor's counters, the hub's), built on
 * prom-client: each is read when a scrape collects it, not kept up to date between scrapes. A read
 * gives every sample of the metric for this scrape; a sample left out is absent from the scrape (an
 * unlabelled metric included: no `0` stands in for a value that could not be read).
 */

export interface Sample {
  labels?: Record<string, string>;
  value: number;
}

/** The samples of one scrape (sync or async); `[]` when there is nothing to say this time. */
export type Read = () => readonly Sample[] | Promise<readonly Sample[]>;

interface Sourced {
  name: string;
  help: string;
  labelNames?: readonly string[];
  read: Read;
}

/**
 * The `collect` of a gauge or counter read at scrape time: each scrape's samples replace the last
 * one's (`write` sets a gauge, adds a counter's total: totals are kept by their owners).
 */
function collectFrom<M extends Gauge | Counter>(
  spec: Sourced,
  write: (metric: M, sample: Sample) => void,
): (this: M) => Promise<void> {
  const unlabelled = (spec.labelNames?.length ?? 0) === 0;
  return async function (this: M) {
    const samples = await spec.read();
    this.reset();
    if (unlabelled) this.remove(); // reset() made it 0
    for (const sample of samples) write(this, sample);
  };
}

/** Registered in `register` only, never prom-client's global registry. */
const options = (register: Registry, spec: Sourced) => ({
  name: spec.name,
  help: spec.help,
  labelNames: [...(spec.labelNames ?? [])],
  registers: [register],
});

/** A gauge read at scrape time. */
export const sourcedGauge = (register: Registry, spec: Sourced): Gauge =>
  new Gauge({
    ...options(register, spec),
    collect: collectFrom<Gauge>(spec, (g, s) => (s.labels ? g.set(s.labels, s.value) : g.set(s.value))),
  });

/**
 * A counter read at scrape time: the total kept by its owner (journal writer, hub, supervisor),
 * which only grows while this process runs.
 */
export const sourcedCounter = (register: Registry, spec: Sourced): Counter =>
  new Counter({
    ...options(register, spec),
    collect: collectFrom<Counter>(spec, (c, s) => (s.labels ? c.inc(s.labels, s.value) : c.inc(s.value))),
  });

/** One unlabelled sample, or none when the value is unknown this scrape. */
export const single = (value: number | null | undefined): Sample[] =>
  value === null || value === undefined ? [] : [{ value }];
