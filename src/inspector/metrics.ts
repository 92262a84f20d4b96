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

/** A gauge read at scrape time, registered in `register` only (never prom-client's global registry). */
export function sourcedGauge(register: Registry, spec: Sourced): Gauge {
  const { read } = spec;
  const unlabelled = (spec.labelNames?.length ?? 0) === 0;
  return new Gauge({
    name: spec.name,
    help: spec.help,
    labelNames: [...(spec.labelNames ?? [])],
    registers: [register],
    async collect() {
      const samples = await read();
      this.reset();
      if (unlabelled) this.remove(); // reset() made it 0
      for (const s of samples) {
        if (s.labels) this.set(s.labels, s.value);
        else this.set(s.value);
      }
    },
  });
}

/**
 * A counter read at scrape time: the total kept by its owner (journal writer, hub, supervisor),
 * which only grows while this process runs; registered in `register` only.
 */
export function sourcedCounter(register: Registry, spec: Sourced): Counter {
  const { read } = spec;
  const unlabelled = (spec.labelNames?.length ?? 0) === 0;
  return new Counter({
    name: spec.name,
    help: spec.help,
    labelNames: [...(spec.labelNames ?? [])],
    registers: [register],
    async collect() {
      const samples = await read();
      this.reset();
      if (unlabelled) this.remove(); // reset() made it 0
      for (const s of samples) {
        if (s.labels) this.inc(s.labels, s.value);
        else this.inc(s.value);
      }
    },
  });
}

/** One unlabelled sample, or none when the value is unknown this scrape. */
export const single = (value: number | null | undefined): Sample[] =>
  value === null || value === undefined ? [] : [{ value }];
