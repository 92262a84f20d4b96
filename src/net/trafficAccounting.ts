import { randomBytes } from 'node:crypto';
import { silentLogger, type Logger } from '../log.js';
import { coerceError } from '../util/errors.js';
import { applyScript, deleteTable, readTableJson, type NftOptions } from './nft.js';
import {
  TRAFFIC_TABLE,
  TrafficTableError,
  parseTrafficTable,
  removePartLines,
  renderBase,
  renderChanges,
  addPartLines,
  changeLines,
  needsQuotaRules,
  quotaRuleLines,
  samePart,
  type PartChange,
  type PartReading,
  type PartState,
  type TrafficPart,
  type TrafficTableState,
} from './trafficTable.js';

export interface TrafficAccountingOptions {
  /** The proxies' network namespace (the table goes there); unset: ours. */
  netns?: string | undefined;
  /** The supervisor's own uid: its connections to the ports (egress probes) are not counted. */
  probeUid: number | null;
  nft?: Omit<NftOptions, 'netns'> | undefined;
  log?: Logger | undefined;
}

interface Admission {
  part: TrafficPart;
  limit: number;
  closed: boolean;
  done: (err?: Error) => void;
}

/**
 * The kernel side of traffic accounting: the `inet mf_traffic` table (src/net/trafficTable.ts) in
 * the proxies' namespace. `start()` finds the table a previous run left (its counters carry on:
 * nothing is reset by a supervisor restart) or creates its base; `admit(part)` makes sure a
 * modem's counters and quota exist before its proxy serves (a part already there for the same
 * modem and ports is kept as it is); `read()` returns every part's cumulative counters; `change`
 * sets quota limits in place, resets quotas, closes and opens ports. Admissions arriving together are applied in one transaction. `stop()`
 * leaves the table in place: the counters outlive the process, and a closed port stays closed.
 */
export class TrafficAccounting {
  /** What the kernel has, as last read or written by us. */
  private known = new Map<number, PartState>();
  private chain: Promise<unknown> = Promise.resolve();
  private queue: Admission[] = [];
  private draining = false;
  /** Called with a part's last reading right before it is removed (its slot serves another modem). */
  onReplaced: ((reading: PartReading) => void) | undefined;
  private readonly log: Logger;

  constructor(private readonly options: TrafficAccountingOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'traffic-table' });
  }

  private nftOptions(): NftOptions {
    return { ...this.options.nft, netns: this.options.netns };
  }

  /** Serialised: reads and writes of the table never interleave. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.catch(() => undefined).then(fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  async start(): Promise<void> {
    const state = await this.serial(async () => {
      const found = await this.ensureBase();
      // parts a previous version left with quota rules and no limit (or the reverse, by hand):
      // their rules as their limit needs them, counters untouched
      const fix = [...this.known.values()].filter((p) => p.quotaRules !== needsQuotaRules(p.limit));
      if (fix.length) {
        const lines = fix.flatMap((p) => quotaRuleLines(p, needsQuotaRules(p.limit)));
        await applyScript({ text: `${lines.join('\n')}\n`, checked: true }, this.nftOptions());
        for (const p of fix) p.quotaRules = needsQuotaRules(p.limit);
      }
      return found;
    });
    this.log.info({ parts: state.parts.size }, 'traffic table ready');
  }

  /** Reads the table; creates its base when missing (or of another version: counters lost). */
  private async ensureBase(): Promise<TrafficTableState> {
    const json = await readTableJson('inet', TRAFFIC_TABLE, this.nftOptions());
    let state = json === null ? null : parseTrafficTable(json);
    if (!state?.current) {
      if (state) this.log.warn('traffic table of another version replaced: its counters start from zero');
      await applyScript(renderBase(this.options.probeUid, state !== null), this.nftOptions());
      state = parseTrafficTable(await readTableJson('inet', TRAFFIC_TABLE, this.nftOptions()));
    }
    this.known = new Map([...state.parts].map(([slot, p]) => [slot, p.state]));
    return state;
  }

  /**
   * Every part's cumulative counters and quota. A table that vanished (deleted by hand, a new
   * namespace) is created again with the parts we know, from zero (new instance tokens).
   */
  read(): Promise<TrafficTableState> {
    return this.serial(async () => {
      const json = await readTableJson('inet', TRAFFIC_TABLE, this.nftOptions());
      const state = json === null ? null : parseTrafficTable(json);
      if (state?.current) {
        this.known = new Map([...state.parts].map(([slot, p]) => [slot, p.state]));
        return state;
      }
      const lost = [...this.known.values()];
      this.log.warn({ parts: lost.length }, 'the traffic table is gone: created again, counting from zero');
      await this.ensureBase();
      if (lost.length)
        await this.applyParts(
          lost.map((p) => ({ part: p, limit: p.limit, closed: p.closed, done: () => undefined })),
        );
      const again = parseTrafficTable(await readTableJson('inet', TRAFFIC_TABLE, this.nftOptions()));
      this.known = new Map([...again.parts].map(([slot, p]) => [slot, p.state]));
      return again;
    });
  }

  /** The part the kernel has for this IMEI (from the last read or write). */
  partOf(imei: string): PartState | undefined {
    for (const p of this.known.values()) if (p.imei === imei) return p;
    return undefined;
  }

  /**
   * The modem's counters and quota exist (with `limit` when they are created) once this resolves.
   * Rejects with `traffic_accounting_failed` when nft refuses: the caller does not serve.
   */
  admit(part: TrafficPart, initial: { limit: number; closed: boolean }): Promise<void> {
    const held = this.known.get(part.slot);
    if (held && samePart(held, part)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ part, ...initial, done: (err) => (err ? reject(err) : resolve()) });
      if (!this.draining) {
        this.draining = true;
        // admissions of one moment (a farm starting) go in one transaction
        setImmediate(() => void this.serial(() => this.drain()));
      }
    });
  }

  private async drain(): Promise<void> {
    const batch = this.queue.splice(0);
    this.draining = false;
    const todo = batch.filter((a) => {
      const held = this.known.get(a.part.slot);
      if (held && samePart(held, a.part)) {
        a.done();
        return false;
      }
      return true;
    });
    if (!todo.length) return;
    try {
      await this.applyParts(todo);
      for (const a of todo) a.done();
    } catch (err) {
      // what we knew may be stale (a part changed by hand): read again, then each on its own
      this.log.warn({ err: coerceError(err) }, 'traffic parts not applied together; one by one');
      try {
        await this.ensureBase();
      } catch (again) {
        for (const a of todo) a.done(this.failure(again));
        return;
      }
      for (const a of todo)
        try {
          await this.applyParts([a]);
          a.done();
        } catch (one) {
          a.done(this.failure(one));
        }
    }
  }

  private failure(err: unknown): TrafficTableError {
    return new TrafficTableError(`the traffic table could not be changed: ${coerceError(err).message}`, {
      cause: err,
    });
  }

  /** One transaction: the parts that stand in the way (same slot, ports or IMEI) go, the new come. */
  private async applyParts(admissions: readonly Admission[]): Promise<void> {
    const lines: string[] = [];
    const removed = new Set<number>();
    const added: PartState[] = [];
    for (const { part, limit, closed } of admissions) {
      for (const held of this.known.values()) {
        if (removed.has(held.slot)) continue;
        const inTheWay =
          held.slot === part.slot ||
          held.imei === part.imei ||
          [held.httpPort, held.socksPort].some((p) => p === part.httpPort || p === part.socksPort);
        if (!inTheWay) continue;
        removed.add(held.slot);
        lines.push(...removePartLines(held));
      }
      const token = randomBytes(8).toString('hex');
      lines.push(...addPartLines(part, token, limit));
      if (closed) lines.push(...changeLines([{ ...part, closed: true }]));
      added.push({ ...part, token, limit, used: 0, closed, quotaRules: needsQuotaRules(limit) });
    }
    // the last readings of the parts that go: their bytes are accounted before the counters vanish
    if (removed.size && this.onReplaced) {
      const json = await readTableJson('inet', TRAFFIC_TABLE, this.nftOptions());
      const state = json === null ? null : parseTrafficTable(json);
      for (const slot of removed) {
        const reading = state?.parts.get(slot)?.reading;
        if (reading) this.onReplaced(reading);
      }
    }
    await applyScript({ text: `${lines.join('\n')}\n`, checked: true }, this.nftOptions());
    for (const slot of removed) this.known.delete(slot);
    for (const p of added) this.known.set(p.slot, p);
    this.log.info(
      { parts: added.map((p) => ({ slot: p.slot, imei: p.imei })), replaced: [...removed] },
      'traffic parts added',
    );
  }

  /** Quota limits in place, quotas reset, ports closed or opened: one `nft -f` run. */
  change(changes: readonly PartChange[]): Promise<void> {
    if (!changes.length) return Promise.resolve();
    return this.serial(async () => {
      const known = changes.filter((c) => this.known.has(c.slot));
      if (!known.length) return;
      // a part that gets its first limit gets the quota rules, one whose limit is lifted loses them
      // (in the same transaction: the quota holds from the moment its limit is set)
      const rules: string[] = [];
      const rewritten: PartState[] = [];
      for (const c of known) {
        const p = this.known.get(c.slot);
        if (!p || c.limit === undefined || needsQuotaRules(c.limit) === p.quotaRules) continue;
        rules.push(...quotaRuleLines(p, needsQuotaRules(c.limit)));
        rewritten.push(p);
      }
      const script = renderChanges(known);
      await applyScript(
        rules.length ? { text: `${script.text}${rules.join('\n')}\n`, checked: true } : script,
        this.nftOptions(),
      );
      for (const c of known) {
        const p = this.known.get(c.slot);
        if (!p) continue;
        if (c.limit !== undefined) p.limit = c.limit;
        if (c.reset) p.used = 0;
        if (c.closed !== undefined) p.closed = c.closed;
      }
      for (const p of rewritten) p.quotaRules = needsQuotaRules(p.limit);
    });
  }

  /** Removes the table (a demo's, in the host's own namespace): its counters are gone. */
  async remove(): Promise<void> {
    await this.serial(() => deleteTable('inet', TRAFFIC_TABLE, this.nftOptions()));
    this.known.clear();
  }

  /** Waits for what is under way; the table stays (counters and closed ports outlive the process). */
  async stop(): Promise<void> {
    await this.chain;
  }
}
