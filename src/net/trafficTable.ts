import { ModemfleetError } from '../util/errors.js';
import type { NftScript } from './nft.js';
import { checkId, checkPort, NftRulesetError } from './nftRuleset.js';

/**
 * The traffic table (`inet mf_traffic`): bytes between customers and each modem's proxy ports,
 * counted by the kernel, and the modem's quota, enforced by it. Pure: text and parsing, no I/O
 * (src/net/trafficAccounting.ts applies and reads it).
 *
 * What is counted is the customer-facing side: TCP segments to a modem's HTTP and SOCKS ports
 * (input hook: `upload`, what the customer sent) and from them, sent by the proxy's own uid
 * (output hook: `download`, what the customer received). That is what a customer is billed for,
 * whatever the proxy backend, and a proxy restart does not touch it. Not the modem's link: that
 * side also carries the proxies' DNS, their own connection set-up, and the carrier's overhead.
 *
 * Payload, not L3 bytes. A counter counts each packet's L3 length, headers included; a customer
 * sent and received only the payload. So each direction has one counter per TCP data offset
 * (`tcp doff` 5-15, i.e. the TCP header length), reached through a counter map, and one counter of
 * the IPv6 packets: payload = Σ (bytes − packets × (20 + 4 × doff)) − 20 × IPv6 packets. This is
 * exact for every segment whatever its options (SACK blocks, timestamps), pure ACKs count zero,
 * and it holds for GSO/GRO super-packets (one header per packet the hook sees). Not subtracted:
 * IPv4 options and IPv6 extension headers (TCP never carries them in practice); retransmitted
 * segments count again, as they were sent again.
 *
 * The quota (`q_<slot>`, one `quota` object per modem) is consumed by every packet of the modem's
 * ports in both directions (L3 bytes, as the kernel can only count those) and, once over, drops
 * them: the port stops at the limit, not at the next sample, and its connections stall (they are
 * not cut: a port stopped a little early reopens for the rest and they go on). Its limit is set by
 * the supervisor in L3 terms from the payload still allowed (src/fleet/trafficMath.ts), and
 * updated in place. Packets dropped while over still use it up (TCP retries them), and the kernel
 * reports at most the limit as used: a port reopened after a stop has its quota reset, so its new
 * limit counts from zero. A part without a limit (`NO_LIMIT`) has its quota object (it holds the
 * part's tag) but no rule that evaluates it: a quota is one atomic counter shared by every CPU,
 * and a port without one should not pay for it on every packet. When a limit is set (or lifted),
 * the part's two chains are rewritten with (or without) the quota rules in the same transaction as
 * the limit (`flush chain` and its rules again: atomic, and the named counters and the quota
 * object, with what it has used, are untouched). The quota uses only what passes while its rules
 * are there; the supervisor's limit is what it has used plus what is left, so that is exact.
 *
 * A closed port (quota spent, expired) has its two ports in the set `closed`: a customer's segments
 * are answered with a TCP reset (a new connection is refused) before the quota is looked at; the
 * proxy's pass (and count): a stalled connection's next retransmission reaches its customer, whose
 * answer is then reset, so it ends at once instead of hanging (a reset from the proxy's side would
 * be out of the customer's window after the dropped segments, and ignored).
 *
 * Connections redirected to other ports (an allowlist's companions: src/net/accessList.ts) are the
 * ports' own: matched by the conntrack's original destination port where the packet's own port is
 * not one of the modem ports (so a connection forwarded to the same port is not counted twice).
 *
 * The supervisor's own connections to the ports (its egress probes, from `probeUid`) are marked
 * (conntrack mark PROBE_MARK) and neither counted nor held by the quota.
 *
 * The table is the one that is never applied whole: re-applying would reset its counters, which
 * are the billing record and must survive a supervisor restart. Its base (sets, maps, hooks) is
 * created when missing; each modem's part (counters, quota, two chains, map elements) is added in
 * one transaction, and replaced only when the slot now serves another modem or other ports (its
 * chains' rules alone may be rewritten, as above: no counter is touched). Every value in the text
 * is a number checked here, a fixed name, or an IMEI checked here.
 */

export const TRAFFIC_TABLE = 'mf_traffic';
/** Marks the base chains' shape; a table without it is replaced whole (its counters are lost). */
export const TRAFFIC_VERSION = 'mf_traffic v3';
/** A quota limit that never trips: no byte quota, not closed. */
export const NO_LIMIT = Number.MAX_SAFE_INTEGER;
/** The conntrack mark of the supervisor's own connections to the ports. */
export const PROBE_MARK = 0x4d460001;
/** TCP data offsets (the header length in 32-bit words). */
export const DOFFS: readonly number[] = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
/** The IPv4 header without options; an IPv6 header is 20 bytes more. */
const IPV4_HEADER = 20;
const IPV6_EXTRA = 20;
const MAX_SLOT = 99_999;

const TABLE = `inet ${TRAFFIC_TABLE}`;
/**
 * A connection whose destination the kernel rewrote (nat redirect or dnat): an allowlist's
 * password-less companions on microsocks+tinyproxy (src/net/accessList.ts) take the listed clients
 * of a modem's ports on ports of their own. The port the customer asked for is the conntrack's
 * original destination: counted, held and closed as that port's own.
 */
const REDIRECTED = 'ct status dnat meta l4proto tcp';
const IMEI = /^[0-9]{15}$/;
const TOKEN = /^[0-9a-f]{8,32}$/;
const TAG = /^imei=([0-9]{15}) ports=([0-9]{1,5}),([0-9]{1,5}) uid=([0-9]{1,10}|-) i=([0-9a-f]{8,32})$/;

export type Direction = 'u' | 'd';

/** One modem's place in the table: its allocation slot, IMEI, ports and proxy uid. */
export interface TrafficPart {
  slot: number;
  imei: string;
  httpPort: number;
  socksPort: number;
  /** The uid its proxies run as (replies are counted from it only); null: they run as we do. */
  uid: number | null;
}

/** A part as the kernel has it: its identity, the instance token of its counters, its quota. */
export interface PartState extends TrafficPart {
  /** Random, made when the part's counters were created: a new token means counters from zero. */
  token: string;
  limit: number;
  used: number;
  /** Its ports are in the `closed` set. */
  closed: boolean;
  /** Its chains evaluate its quota (a part without a limit has no quota rules). */
  quotaRules: boolean;
}

/** What one part's counters say now (cumulative since the part was created). */
export interface PartReading {
  slot: number;
  imei: string;
  token: string;
  /** Payload bytes to the customer and from the customer. */
  download: number;
  upload: number;
  /** The same in L3 bytes (headers included): the quota's currency. */
  l3Download: number;
  l3Upload: number;
  quotaLimit: number;
  /** What the quota has used (the kernel reports at most its limit). */
  quotaUsed: number;
  /** Closed: its ports are in the `closed` set. */
  closed: boolean;
}

function fail(what: string, value: unknown): never {
  throw new NftRulesetError(`traffic table: ${JSON.stringify(value)?.slice(0, 60) ?? String(value)} ${what}`);
}

function checkSlot(slot: unknown): number {
  if (typeof slot !== 'number' || !Number.isInteger(slot) || slot < 0 || slot > MAX_SLOT)
    fail(`is not a slot (0-${MAX_SLOT})`, slot);
  return slot;
}

function checkLimit(limit: unknown): number {
  if (typeof limit !== 'number' || !Number.isSafeInteger(limit) || limit < 1)
    fail('is not a quota limit (1 to 2^53-1 bytes)', limit);
  return limit;
}

function checkPart(part: TrafficPart): TrafficPart {
  checkSlot(part.slot);
  if (typeof part.imei !== 'string' || !IMEI.test(part.imei)) fail('is not an IMEI', part.imei);
  checkPort(part.httpPort, 'traffic table: http port');
  checkPort(part.socksPort, 'traffic table: socks port');
  if (part.httpPort === part.socksPort) fail('is used for both ports', part.httpPort);
  if (part.uid !== null) checkId(part.uid, 'traffic table: uid');
  return part;
}

export const counterName = (dir: Direction, slot: number, doff: number | 'v6'): string =>
  `${dir}${slot}_${doff}`;
export const quotaName = (slot: number): string => `q_${slot}`;
const chainName = (slot: number, side: 'in' | 'out'): string => `m${slot}_${side}`;
/** Whether a part with this limit has the quota rules in its chains. */
export const needsQuotaRules = (limit: number): boolean => limit !== NO_LIMIT;

/** The identity of a part, kept in its quota's comment. */
export function partTag(part: TrafficPart, token: string): string {
  checkPart(part);
  if (!TOKEN.test(token)) fail('is not an instance token', token);
  return `imei=${part.imei} ports=${part.httpPort},${part.socksPort} uid=${part.uid ?? '-'} i=${token}`;
}

/** A part's identity from its quota's comment; null for anything else. */
export function parseTag(comment: unknown): (Omit<TrafficPart, 'slot'> & { token: string }) | null {
  const m = typeof comment === 'string' ? TAG.exec(comment) : null;
  if (!m) return null;
  return {
    imei: m[1] ?? '',
    httpPort: Number(m[2]),
    socksPort: Number(m[3]),
    uid: m[4] === '-' ? null : Number(m[4]),
    token: m[5] ?? '',
  };
}

/** Same modem, ports and uid: the part can stay as it is. */
export function samePart(a: TrafficPart, b: TrafficPart): boolean {
  return (
    a.slot === b.slot &&
    a.imei === b.imei &&
    a.httpPort === b.httpPort &&
    a.socksPort === b.socksPort &&
    a.uid === b.uid
  );
}

const script = (lines: readonly string[]): NftScript => ({ text: `${lines.join('\n')}\n`, checked: true });

/**
 * The base of the table, created whole (after deleting a table of another version, when
 * `replace`): the ports' set and verdict maps, and the two hooks. `probeUid`: the supervisor's own
 * uid, whose new connections to the ports are marked and not counted (null: none are).
 */
export function renderBase(probeUid: number | null, replace: boolean): NftScript {
  const probe =
    probeUid === null
      ? []
      : [
          `\t\tmeta skuid ${checkId(probeUid, 'traffic table: probe uid')} meta l4proto tcp ct original proto-dst @ports ct state new ct mark set 0x${PROBE_MARK.toString(16)} comment "the supervisor own probes"`,
        ];
  return script([
    `table ${TABLE}`,
    ...(replace ? [`delete table ${TABLE}`] : []),
    `table ${TABLE} {`,
    '\tset ports {',
    '\t\ttype inet_service',
    '\t}',
    '\tset closed {',
    '\t\ttype inet_service',
    '\t}',
    '\tmap ports_in {',
    '\t\ttype inet_service : verdict',
    '\t}',
    '\tmap ports_out {',
    '\t\ttype inet_service : verdict',
    '\t}',
    '\tchain customer_in {',
    '\t\ttype filter hook input priority 10; policy accept;',
    `\t\ttcp dport vmap @ports_in comment "${TRAFFIC_VERSION}"`,
    `\t\t${REDIRECTED} ct direction original tcp dport != @ports ct original proto-dst vmap @ports_in`,
    '\t}',
    '\tchain customer_out {',
    '\t\ttype filter hook output priority 10; policy accept;',
    ...probe,
    `\t\ttcp sport vmap @ports_out comment "${TRAFFIC_VERSION}"`,
    `\t\t${REDIRECTED} ct direction reply tcp sport != @ports ct original proto-dst vmap @ports_out`,
    '\t}',
    '}',
  ]);
}

/**
 * One side's rules of a part's chain (`in`: the customer's segments, `out`: the proxy's), with or
 * without the quota's.
 */
function partRules(part: TrafficPart, side: 'in' | 'out', quota: boolean): string[] {
  const { slot, uid } = part;
  const q = quotaName(slot);
  const counting = (dir: Direction): string[] => [
    `counter name tcp doff map { ${DOFFS.map((d) => `${d} : "${counterName(dir, slot, d)}"`).join(', ')} }`,
    `meta nfproto ipv6 counter name "${counterName(dir, slot, 'v6')}"`,
  ];
  return side === 'in'
    ? [
        `ct mark 0x${PROBE_MARK.toString(16)} return`,
        // closed: a customer's SYN is refused, any other segment reset (redirected ones too)
        'tcp dport @closed reject with tcp reset',
        `${REDIRECTED} ct original proto-dst @closed reject with tcp reset`,
        // over the quota: stalled (reopened, it goes on)
        ...(quota ? [`quota name "${q}" drop`] : []),
        ...counting('u'),
      ]
    : [
        // resets always reach the customer (they carry no payload): refusals
        'tcp flags & rst == rst return',
        ...(uid !== null ? [`meta skuid != ${uid} return`] : []),
        `ct mark 0x${PROBE_MARK.toString(16)} return`,
        // over the quota: stalled; closed: through, so that the customer's answer is reset
        // (the port the customer asked for: a redirected connection's reply leaves from another)
        ...(quota ? [`tcp sport != @closed ct original proto-dst != @closed quota name "${q}" drop`] : []),
        ...counting('d'),
      ];
}

/** The commands that add one part (its counters start at zero under `token`). */
export function addPartLines(part: TrafficPart, token: string, limit: number): string[] {
  const tag = partTag(part, token);
  const { slot, httpPort, socksPort } = part;
  const lines: string[] = [];
  for (const dir of ['u', 'd'] as const) {
    for (const doff of DOFFS) lines.push(`add counter ${TABLE} ${counterName(dir, slot, doff)}`);
    lines.push(`add counter ${TABLE} ${counterName(dir, slot, 'v6')}`);
  }
  lines.push(`add quota ${TABLE} ${quotaName(slot)} { over ${checkLimit(limit)} bytes; comment "${tag}"; }`);
  for (const side of ['in', 'out'] as const) {
    const chain = chainName(slot, side);
    lines.push(`add chain ${TABLE} ${chain}`);
    for (const rule of partRules(part, side, needsQuotaRules(limit)))
      lines.push(`add rule ${TABLE} ${chain} ${rule}`);
  }
  lines.push(`add element ${TABLE} ports { ${httpPort}, ${socksPort} }`);
  for (const side of ['in', 'out'] as const)
    lines.push(
      `add element ${TABLE} ports_${side} { ${httpPort} : jump ${chainName(slot, side)}, ${socksPort} : jump ${chainName(slot, side)} }`,
    );
  return lines;
}

/**
 * The commands that rewrite an existing part's two chains with (`quota`) or without the quota
 * rules: its rules only (in the transaction of the change that needs it, so no packet sees a chain
 * half written); the counters and the quota object, with what it has used, stay as they are.
 */
export function quotaRuleLines(part: TrafficPart, quota: boolean): string[] {
  checkPart(part);
  const lines: string[] = [];
  for (const side of ['in', 'out'] as const) {
    const chain = chainName(part.slot, side);
    lines.push(`flush chain ${TABLE} ${chain}`);
    for (const rule of partRules(part, side, quota)) lines.push(`add rule ${TABLE} ${chain} ${rule}`);
  }
  return lines;
}

/** The commands that remove one part as the kernel has it (elements, chains, counters, quota). */
export function removePartLines(part: TrafficPart): string[] {
  const { slot, httpPort, socksPort } = checkPart(part);
  const lines = [
    // (added first: deleting an element that is not there would fail the transaction)
    `add element ${TABLE} closed { ${httpPort}, ${socksPort} }`,
    `delete element ${TABLE} closed { ${httpPort}, ${socksPort} }`,
    `delete element ${TABLE} ports_in { ${httpPort}, ${socksPort} }`,
    `delete element ${TABLE} ports_out { ${httpPort}, ${socksPort} }`,
    `delete element ${TABLE} ports { ${httpPort}, ${socksPort} }`,
  ];
  for (const side of ['in', 'out'] as const)
    lines.push(
      `flush chain ${TABLE} ${chainName(slot, side)}`,
      `delete chain ${TABLE} ${chainName(slot, side)}`,
    );
  for (const dir of ['u', 'd'] as const) {
    for (const doff of DOFFS) lines.push(`delete counter ${TABLE} ${counterName(dir, slot, doff)}`);
    lines.push(`delete counter ${TABLE} ${counterName(dir, slot, 'v6')}`);
  }
  lines.push(`delete quota ${TABLE} ${quotaName(slot)}`);
  return lines;
}

/** What to change of one part's enforcement (src/fleet/trafficMonitor.ts decides). */
export interface PartChange {
  slot: number;
  httpPort: number;
  socksPort: number;
  /** A new quota limit, in place (the kernel keeps what it has used, and the comment). */
  limit?: number | undefined;
  /** What the quota has used goes back to zero first (a port reopened after a stop). */
  reset?: boolean | undefined;
  /** Closed (its ports in `closed`) or open. */
  closed?: boolean | undefined;
}

/** The commands of a set of changes (one transaction; the reset of a quota is done at once). */
export function changeLines(changes: readonly PartChange[]): string[] {
  const lines: string[] = [];
  for (const c of changes) {
    const q = quotaName(checkSlot(c.slot));
    const ports = `{ ${checkPort(c.httpPort, 'traffic table: http port')}, ${checkPort(c.socksPort, 'traffic table: socks port')} }`;
    if (c.closed === true) lines.push(`add element ${TABLE} closed ${ports}`);
    if (c.reset) lines.push(`reset quota ${TABLE} ${q}`);
    if (c.limit !== undefined) lines.push(`add quota ${TABLE} ${q} { over ${checkLimit(c.limit)} bytes; }`);
    if (c.closed === false)
      lines.push(`add element ${TABLE} closed ${ports}`, `delete element ${TABLE} closed ${ports}`);
  }
  return lines;
}

export function renderChanges(changes: readonly PartChange[]): NftScript {
  return script(changeLines(changes));
}

/** The table as read back: whether its base is of this version, and its parts with readings. */
export interface TrafficTableState {
  current: boolean;
  parts: Map<number, { state: PartState; reading: PartReading }>;
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === 'object' && v !== null ? (v as Json) : {});
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** Reads `nft -j list table inet mf_traffic` (parsed JSON): the base's version and every part. */
export function parseTrafficTable(json: unknown): TrafficTableState {
  const items = obj(json)['nftables'];
  const counters = new Map<string, { packets: number; bytes: number }>();
  const quotas = new Map<number, { limit: number; used: number; comment: unknown }>();
  const versioned = new Set<string>();
  /** Chains with a rule that evaluates a quota. */
  const quotaChains = new Set<string>();
  const closed = new Set<number>();
  for (const item of Array.isArray(items) ? items : []) {
    const o = obj(item);
    if ('counter' in o) {
      const c = obj(o['counter']);
      counters.set(String(c['name']), { packets: num(c['packets']), bytes: num(c['bytes']) });
    } else if ('quota' in o) {
      const q = obj(o['quota']);
      const m = /^q_([0-9]{1,5})$/.exec(String(q['name']));
      if (m)
        quotas.set(Number(m[1]), { limit: num(q['bytes']), used: num(q['used']), comment: q['comment'] });
    } else if ('rule' in o) {
      const r = obj(o['rule']);
      if (r['comment'] === TRAFFIC_VERSION) versioned.add(String(r['chain']));
      const expr = r['expr'];
      if (Array.isArray(expr) && expr.some((e) => typeof obj(e)['quota'] === 'string'))
        quotaChains.add(String(r['chain']));
    } else if ('set' in o) {
      const set = obj(o['set']);
      const elem = set['elem'];
      if (set['name'] === 'closed' && Array.isArray(elem))
        for (const e of elem) if (typeof e === 'number') closed.add(e);
    }
  }
  const parts: TrafficTableState['parts'] = new Map();
  for (const [slot, q] of quotas) {
    const tag = parseTag(q.comment);
    if (!tag) continue;
    const sums = (dir: Direction): { payload: number; l3: number } | undefined => {
      let payload = 0;
      let l3 = 0;
      for (const doff of DOFFS) {
        const c = counters.get(counterName(dir, slot, doff));
        if (!c) return undefined;
        l3 += c.bytes;
        payload += c.bytes - c.packets * (IPV4_HEADER + 4 * doff);
      }
      const v6 = counters.get(counterName(dir, slot, 'v6'));
      if (!v6) return undefined;
      payload -= v6.packets * IPV6_EXTRA;
      return { payload: Math.max(0, payload), l3 };
    };
    const up = sums('u');
    const down = sums('d');
    // a part without all of its counters is not one of ours as written: it is replaced
    if (!up || !down) continue;
    const isClosed = closed.has(tag.httpPort) && closed.has(tag.socksPort);
    const quotaRules = quotaChains.has(chainName(slot, 'in')) && quotaChains.has(chainName(slot, 'out'));
    parts.set(slot, {
      state: { slot, ...tag, limit: q.limit, used: q.used, closed: isClosed, quotaRules },
      reading: {
        slot,
        imei: tag.imei,
        token: tag.token,
        download: down.payload,
        upload: up.payload,
        l3Download: down.l3,
        l3Upload: up.l3,
        quotaLimit: q.limit,
        quotaUsed: q.used,
        closed: isClosed,
      },
    });
  }
  return { current: versioned.has('customer_in') && versioned.has('customer_out'), parts };
}

/** Thrown when the table cannot be brought to what the farm needs (nft refused, or unreadable). */
export class TrafficTableError extends ModemfleetError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('traffic_accounting_failed', message, options);
    this.name = 'TrafficTableError';
  }
}
