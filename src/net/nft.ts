import { run } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';
import { checkNetns } from './ip.js';
import { checkTable, renderDeleteTable, renderTable, type NftFamily, type NftTable } from './nftRuleset.js';

/**
 * The `nft` command (nftables), the only way modemfleet applies packet-filter and NAT rules (the
 * lab's carrier NAT, the proxies' egress policy, traffic counters, quotas). Each owner applies
 * whole tables: `applyTable` renders and checks one (src/net/nftRuleset.ts), then replaces it in a
 * single `nft -f -` transaction, so a re-apply is idempotent and a failure changes nothing.
 * The traffic table is the one exception (its counters are never reset): `applyScript`.
 * Optionally inside a network namespace (`ip netns exec NS nft`), always with a timeout: a hung
 * `nft` is killed and reported, never waited on forever.
 */
export interface NftOptions {
  /** Network namespace name; unset: the supervisor's own. */
  netns?: string | undefined;
  timeoutMs?: number;
  /** The program; tests may point at a wrapper. */
  bin?: string;
}

export class NftError extends ModemfleetError {
  constructor(
    code: 'nft_failed' | 'nft_timeout' | 'nft_unreadable' | 'no_nft',
    message: string,
    readonly args: readonly string[],
    readonly stderr: string,
  ) {
    super(code, message);
    this.name = 'NftError';
  }
}

async function nft(args: readonly string[], options: NftOptions, input?: string): Promise<string> {
  const bin = options.bin ?? 'nft';
  const [file, ...full] =
    options.netns === undefined
      ? [bin, ...args]
      : ['ip', 'netns', 'exec', checkNetns(options.netns), bin, ...args];
  const shown = `nft ${args.join(' ')}${options.netns === undefined ? '' : ` (netns ${options.netns})`}`;
  const result = await run(file ?? bin, full, { timeoutMs: options.timeoutMs ?? 5_000, input });
  if (result.timedOut) throw new NftError('nft_timeout', `${shown} timed out`, full, result.stderr);
  if (result.spawnFailed || /exec of "[^"]*" failed: No such file/.test(result.stderr))
    throw new NftError('no_nft', `${bin} is not installed (apt-get install nftables)`, full, result.stderr);
  if (result.exitCode !== 0)
    throw new NftError(
      'nft_failed',
      `${shown} failed: ${result.stderr.trim().slice(0, 500)}`,
      full,
      result.stderr,
    );
  return result.stdout;
}

/**
 * Replaces table `table.name` with exactly this definition, atomically. A bad value throws
 * `invalid_ruleset` before nft runs; a ruleset nft or the kernel refuses throws `nft_failed`; in
 * both cases the table is left as it was. Re-applying resets the table's counters and quotas (read
 * them first with `readTable` where they matter).
 */
export async function applyTable(table: NftTable, options: NftOptions = {}): Promise<void> {
  await nft(['-f', '-'], options, renderTable(table));
}

/** Removes the table; nothing happens when it does not exist. */
export async function deleteTable(family: NftFamily, name: string, options: NftOptions = {}): Promise<void> {
  await nft(['-f', '-'], options, renderDeleteTable(family, name));
}

export interface NftCounter {
  packets: number;
  bytes: number;
}

/** A table as the kernel has it (`nft -j list table`), reduced to what its owners read back. */
export interface NftTableState {
  family: NftFamily;
  name: string;
  chains: { name: string; type?: string; hook?: string; priority?: number; policy?: string }[];
  /** In chain order; `counter` is the rule's anonymous counter, `counterName` its named one. */
  rules: { chain: string; handle: number; comment?: string; counter?: NftCounter; counterName?: string }[];
  counters: Record<string, NftCounter>;
  quotas: Record<string, { bytes: number; used: number; over: boolean }>;
  /** Elements as text: `1.2.3.4`, `10.0.0.0/8`, `a-b`, `80`, `wwan0`. */
  sets: Record<string, { type: string; elements: string[] }>;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === 'object' && v !== null ? (v as Json) : {});
const num = (v: unknown): number => (typeof v === 'number' ? v : 0);
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);

function elementText(e: unknown): string {
  if (typeof e === 'string' || typeof e === 'number') return String(e);
  const o = obj(e);
  const prefix = obj(o['prefix']);
  if ('prefix' in o) return `${String(prefix['addr'])}/${num(prefix['len'])}`;
  if (Array.isArray(o['range'])) return (o['range'] as unknown[]).map(String).join('-');
  if ('elem' in o) return elementText(obj(o['elem'])['val']);
  return JSON.stringify(e);
}

/** Parses `nft -j list table` output (exported for tests). */
export function parseTable(family: NftFamily, name: string, text: string): NftTableState {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new NftError(
      'nft_unreadable',
      `nft -j list table ${family} ${name}: unreadable output`,
      [],
      text.slice(0, 200),
    );
  }
  const state: NftTableState = { family, name, chains: [], rules: [], counters: {}, quotas: {}, sets: {} };
  const items = obj(parsed)['nftables'];
  for (const item of Array.isArray(items) ? items : []) {
    const o = obj(item);
    if ('chain' in o) {
      const c = obj(o['chain']);
      state.chains.push({
        name: String(c['name']),
        ...(str(c['type']) ? { type: str(c['type']) } : {}),
        ...(str(c['hook']) ? { hook: str(c['hook']) } : {}),
        ...(typeof c['prio'] === 'number' ? { priority: c['prio'] } : {}),
        ...(str(c['policy']) ? { policy: str(c['policy']) } : {}),
      });
    } else if ('rule' in o) {
      const r = obj(o['rule']);
      const rule: NftTableState['rules'][number] = { chain: String(r['chain']), handle: num(r['handle']) };
      const comment = str(r['comment']);
      if (comment !== undefined) rule.comment = comment;
      for (const e of Array.isArray(r['expr']) ? (r['expr'] as unknown[]) : []) {
        const counter = obj(e)['counter'];
        if (typeof counter === 'string') rule.counterName = counter;
        else if (counter !== undefined)
          rule.counter = { packets: num(obj(counter)['packets']), bytes: num(obj(counter)['bytes']) };
      }
      state.rules.push(rule);
    } else if ('counter' in o) {
      const c = obj(o['counter']);
      state.counters[String(c['name'])] = { packets: num(c['packets']), bytes: num(c['bytes']) };
    } else if ('quota' in o) {
      const q = obj(o['quota']);
      state.quotas[String(q['name'])] = {
        bytes: num(q['bytes']),
        used: num(q['used']),
        over: q['inv'] === true,
      };
    } else if ('set' in o) {
      const s = obj(o['set']);
      const elem = s['elem'];
      state.sets[String(s['name'])] = {
        type: String(s['type']),
        elements: Array.isArray(elem) ? elem.map(elementText) : [],
      };
    }
  }
  return state;
}

/** `nft -j list table` text; null when there is no such table. */
async function listTable(family: NftFamily, name: string, options: NftOptions): Promise<string | null> {
  checkTable(family, name);
  try {
    return await nft(['-j', 'list', 'table', family, name], options);
  } catch (err) {
    // nft's own "no such table" (a missing namespace is `ip`'s "Cannot open network namespace")
    if (
      err instanceof NftError &&
      err.code === 'nft_failed' &&
      /^Error: No such file or directory/m.test(err.stderr)
    )
      return null;
    throw err;
  }
}

/** The table as the kernel has it, with its counters; null when there is no such table. */
export async function readTable(
  family: NftFamily,
  name: string,
  options: NftOptions = {},
): Promise<NftTableState | null> {
  const text = await listTable(family, name, options);
  return text === null ? null : parseTable(family, name, text);
}

/**
 * The table as `nft -j list table` gives it (parsed JSON, for owners that read more than
 * `NftTableState` holds: object comments, handles); null when there is no such table.
 */
export async function readTableJson(
  family: NftFamily,
  name: string,
  options: NftOptions = {},
): Promise<unknown> {
  const text = await listTable(family, name, options);
  if (text === null) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new NftError(
      'nft_unreadable',
      `nft -j list table ${family} ${name}: unreadable output`,
      [],
      text.slice(0, 200),
    );
  }
}

/** Text rendered by a module's own checked renderer (`TrafficScript`), never text from elsewhere. */
export interface NftScript {
  readonly text: string;
  readonly checked: true;
}

/**
 * Runs a checked script in one `nft -f -` transaction: all of it or nothing. Only for the one
 * table that cannot be applied whole (src/net/trafficTable.ts: its counters are the billing record
 * and re-applying resets them); every other owner uses `applyTable`.
 */
export async function applyScript(script: NftScript, options: NftOptions = {}): Promise<void> {
  await nft(['-f', '-'], options, script.text);
}
