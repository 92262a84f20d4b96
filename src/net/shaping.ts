import { run } from '../process/run.js';
import type { SpeedLimits } from '../proxyAccess.js';
import { ModemfleetError } from '../util/errors.js';
import { checkNetns, ip } from './ip.js';
import { checkIfname } from './nftRuleset.js';

/**
 * Speed limits in the kernel, on the modem's own link (a qmi_wwan raw-ip netdev in production, a
 * veth in the lab), so they hold for every backend and survive a proxy restart:
 * - upload (the customer's bytes to the internet: egress of the link to the carrier): an HTB root
 *   qdisc on the link, one class at the limit, everything in it but pure TCP ACKs, which go to
 *   HTB's direct queue: they carry none of the upload, and queued behind an upload at its limit
 *   they held a download on the same link to a fraction of its own limit (measured in the lab: a
 *   download limited to 8 Mbit/s ran at 0.47 Mbit/s beside an upload at its 1 Mbit/s limit, and at
 *   5.7 Mbit/s with the ACKs sent direct);
 * - download (the internet's bytes to the customer: ingress of the link): the link's ingress is
 *   redirected (u32 match-all, `mirred`) to an ifb device of the modem, whose HTB root holds the
 *   limit. Policing the ingress would drop instead of queue; an ifb queues like the upload side.
 *   Pure TCP ACKs (segments without payload: IPv4 without options or IPv6 without extension
 *   headers, whose length is exactly the IP and TCP headers) are not redirected: they carry none of
 *   the download, and during an upload every ACK of the internet side would otherwise go through
 *   `mirred`, the ifb's queue and HTB before the proxy's socket sees it (that halved an upload
 *   through tinyproxy in the benchmark, BENCHMARKS.md "Throughput through one port"). Anything
 *   else (a segment with a byte of payload, IP options, fragments, UDP, ICMP) is redirected.
 * Only HTB, u32, mirred, ingress and ifb are used: the smallest set (a minimal kernel such as CI's
 * has no tbf, fq_codel, matchall or police). Limits change live: `tc class replace` on the same
 * class, no proxy restart, no gap. Rates are of the link's packets (IP headers included, and the
 * Ethernet header on a veth; the download's pure ACKs not counted): what a customer measures as
 * payload is ~4 % less at a 1500 MTU.
 */

export interface ShapingOptions {
  netns?: string | undefined;
  timeoutMs?: number;
}

/** One tc call's options: a `-batch -` reads its commands from `input`. */
type TcOptions = ShapingOptions & { input?: string };

export class ShapingError extends ModemfleetError {
  constructor(
    message: string,
    readonly stderr: string,
  ) {
    super('shaping_failed', message);
    this.name = 'ShapingError';
  }
}

/** The ifb device that carries a modem's download queue (IFNAMSIZ: at most 15 characters). */
export const ifbName = (ifaceId: number): string => {
  if (!Number.isInteger(ifaceId) || ifaceId < 0 || ifaceId > 99_999_999)
    throw new ModemfleetError('invalid_shaping', `interface id ${ifaceId} out of range`);
  return `mfifb${ifaceId}`;
};

/** HTB class arguments for a rate: burst ~20 ms of it (at least 16 KiB), quantum within HTB's bounds. */
export function htbRate(kbps: number): string[] {
  if (!Number.isInteger(kbps) || kbps < 1 || kbps > 10_000_000)
    throw new ModemfleetError('invalid_shaping', `rate ${kbps} kbit/s out of range`);
  const bytesPerSecond = (kbps * 1000) / 8;
  const burst = Math.max(16_384, Math.ceil(bytesPerSecond / 50));
  const quantum = Math.min(200_000, Math.max(1_600, Math.floor(bytesPerSecond / 10)));
  return [
    'rate',
    `${kbps}kbit`,
    'ceil',
    `${kbps}kbit`,
    'burst',
    String(burst),
    'cburst',
    String(burst),
    'quantum',
    String(quantum),
  ];
}

/** The tc argument lists that set one HTB limit as the root of `dev` (a new root, then its class). */
export function htbCommands(dev: string, kbps: number): string[][] {
  checkIfname(dev, 'shaping dev');
  return [
    ['qdisc', 'add', 'dev', dev, 'root', 'handle', '1:', 'htb', 'default', '1'],
    ['class', 'replace', 'dev', dev, 'parent', '1:', 'classid', '1:1', 'htb', ...htbRate(kbps)],
  ];
}

/**
 * One HTB limit at the root of `dev`: the qdisc only when it is not there yet (HTB has no change).
 * With `acks` (the link's upload), the pure-ACK filters too, when they are not all there (a root
 * of the version before had none).
 */
async function applyHtb(dev: string, kbps: number, options: ShapingOptions, acks = false): Promise<void> {
  const [addRoot, setClass] = htbCommands(dev, kbps) as [string[], string[]];
  const root = await tcMust(['qdisc', 'show', 'dev', dev, 'root'], options);
  if (!/^qdisc htb 1: root/m.test(root)) {
    await tcAbsentOk(['qdisc', 'del', 'dev', dev, 'root'], options);
    await tcMust(addRoot, options);
  }
  await tcMust(setClass, options);
  if (!acks || uploadAcksInPlace(await tcMust(['filter', 'show', 'dev', dev, 'parent', '1:'], options)))
    return;
  await tcAbsentOk(['filter', 'del', 'dev', dev, 'parent', '1:'], options);
  const batch = uploadAckCommands(dev).map((args) => args.join(' '));
  await tcMust(['-batch', '-'], { ...options, input: `${batch.join('\n')}\n` });
}

async function tc(
  args: readonly string[],
  options: TcOptions,
): Promise<{ ok: boolean; stderr: string; stdout: string }> {
  const [file, ...full] =
    options.netns === undefined
      ? ['tc', ...args]
      : ['ip', 'netns', 'exec', checkNetns(options.netns), 'tc', ...args];
  const result = await run(file ?? 'tc', full, {
    timeoutMs: options.timeoutMs ?? 5_000,
    ...(options.input !== undefined ? { input: options.input } : {}),
  });
  if (result.timedOut) throw new ShapingError(`tc ${args.join(' ')} timed out`, result.stderr);
  if (result.spawnFailed)
    throw new ShapingError('tc is not installed (apt-get install iproute2)', result.stderr);
  return { ok: result.exitCode === 0, stderr: result.stderr, stdout: result.stdout };
}

async function tcMust(args: readonly string[], options: TcOptions): Promise<string> {
  const r = await tc(args, options);
  if (!r.ok)
    throw new ShapingError(`tc ${args.join(' ')} failed: ${r.stderr.trim().slice(0, 300)}`, r.stderr);
  return r.stdout;
}

/** A delete that may find nothing to delete (no such qdisc, no such device). */
async function tcAbsentOk(args: readonly string[], options: ShapingOptions): Promise<void> {
  const r = await tc(args, options);
  if (!r.ok && !/No such file|Cannot find|handle of zero|Invalid handle|not found/i.test(r.stderr))
    throw new ShapingError(`tc ${args.join(' ')} failed: ${r.stderr.trim().slice(0, 300)}`, r.stderr);
}

/**
 * Sets (or lifts, with null) a modem's limits on its link `link`, with `ifb` for the download
 * queue. Idempotent; a change of rate only replaces the class (live, nothing dropped).
 */
export async function applyShaping(
  link: string,
  ifb: string,
  limits: SpeedLimits,
  options: ShapingOptions = {},
): Promise<void> {
  checkIfname(link, 'shaping link');
  checkIfname(ifb, 'shaping ifb');
  const ipOptions = { netns: options.netns, timeoutMs: options.timeoutMs ?? 5_000 };
  if (limits.uploadKbps === null) await tcAbsentOk(['qdisc', 'del', 'dev', link, 'root'], options);
  else await applyHtb(link, limits.uploadKbps, options, true);
  if (limits.downloadKbps === null) {
    await tcAbsentOk(['qdisc', 'del', 'dev', link, 'ingress'], options);
    await ip(['link', 'del', ifb], ipOptions).catch(() => undefined);
    return;
  }
  const exists = await ip(['link', 'show', 'dev', ifb], ipOptions).then(
    () => true,
    () => false,
  );
  if (!exists) await ip(['link', 'add', ifb, 'type', 'ifb'], ipOptions);
  await ip(['link', 'set', ifb, 'up'], ipOptions);
  await applyHtb(ifb, limits.downloadKbps, options);
  const filters = await tcMust(['filter', 'show', 'dev', link, 'parent', 'ffff:'], options).catch(() => '');
  if (ingressInPlace(filters, ifb)) return;
  await tcAbsentOk(['qdisc', 'del', 'dev', link, 'ingress'], options);
  const commands = ingressCommands(link, ifb);
  const batch = commands.map((args) => args.join(' ')).join('\n');
  await tcMust(['-batch', '-'], { ...options, input: `${batch}\n` });
}

/** TCP data offsets (the TCP header's length in 32-bit words): a pure ACK is exactly one of these. */
const DOFFS = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15] as const;
/** The u32 hash tables of the pure-ACK matches (IPv4, IPv6), linked from their protocol's filter. */
const ACK_TABLES = { ip: '1:', ipv6: '2:' } as const;
/**
 * The class a pure ACK gets: on the ingress, classified (`:1`), so it passes (no action, no
 * redirect); on the link's HTB root, the qdisc's own handle (`1:0`), HTB's direct queue, sent
 * before and apart from the limited class.
 */
const ACK_FLOW = { ingress: ':1', upload: '1:0' } as const;

/**
 * The tc argument lists of the pure-ACK filters below `parent` of `dev`: per protocol, a u32
 * filter that sends short packets (under 128 bytes of IP length) on to a table of exact pure-ACK
 * shapes, one per TCP header length, which get `flowid`. A long packet is decided by one comparison
 * per protocol; a short one that is not a pure ACK (a few bytes of payload, an option, a fragment)
 * comes back from the table unmatched and goes on to the filters after these.
 */
function ackFilterCommands(dev: string, parent: string, flowid: string): string[][] {
  const filter = (protocol: string, prio: number): string[] => [
    ...['filter', 'add', 'dev', dev, 'parent', parent, 'protocol', protocol, 'prio', String(prio)],
  ];
  const hex = (n: number): string => `0x${n.toString(16)}`;
  // IPv4: version 4 and a 20-byte header, total length = 20 + 4 * doff, TCP, not a fragment (MF
  // clear, offset 0), the TCP header's data offset (byte 12 of TCP: 32 of the packet)
  const v4 = DOFFS.map((doff) => [
    ...filter('ip', 1),
    ...['u32', 'ht', ACK_TABLES.ip, 'match', 'u16', hex(20 + 4 * doff), '0xffff', 'at', '2'],
    ...['match', 'u8', '0x45', '0xff', 'at', '0', 'match', 'u8', '0x6', '0xff', 'at', '9'],
    ...['match', 'u16', '0x0', '0x3fff', 'at', '6', 'match', 'u8', hex(doff << 4), '0xf0', 'at', '32'],
    ...['flowid', flowid],
  ]);
  // IPv6: payload length = 4 * doff, next header TCP (no extension headers), data offset (40 + 12)
  const v6 = DOFFS.map((doff) => [
    ...filter('ipv6', 2),
    ...['u32', 'ht', ACK_TABLES.ipv6, 'match', 'u16', hex(4 * doff), '0xffff', 'at', '4'],
    ...['match', 'u8', '0x6', '0xff', 'at', '6', 'match', 'u8', hex(doff << 4), '0xf0', 'at', '52'],
    ...['flowid', flowid],
  ]);
  return [
    [...filter('ip', 1), 'handle', ACK_TABLES.ip, 'u32', 'divisor', '1'],
    ...v4,
    [...filter('ip', 1), 'u32', 'match', 'u16', '0x0', '0xff80', 'at', '2', 'link', ACK_TABLES.ip],
    [...filter('ipv6', 2), 'handle', ACK_TABLES.ipv6, 'u32', 'divisor', '1'],
    ...v6,
    [...filter('ipv6', 2), 'u32', 'match', 'u16', '0x0', '0xff80', 'at', '4', 'link', ACK_TABLES.ipv6],
  ];
}

/** How many pure-ACK shapes with `flowid` a `tc filter show` lists (all of them: 2 × 11). */
function ackShapes(filters: string, flowid: string): number {
  // tc shows the classid 1:0 as `1:`
  const shown = new RegExp(`\\bflowid ${flowid === ACK_FLOW.upload ? '1:' : flowid}(\\s|$)`);
  return filters
    .split('\n')
    .filter((line) => /^filter protocol ipv?6? pref [12] u32 /.test(line) && shown.test(line)).length;
}

/**
 * The tc argument lists (one `tc -batch`) of a link's ingress: the ingress qdisc; the pure-ACK
 * filters, which pass (classified, no action); then the redirect of everything else to the ifb.
 */
export function ingressCommands(link: string, ifb: string): string[][] {
  checkIfname(link, 'shaping link');
  checkIfname(ifb, 'shaping ifb');
  return [
    ['qdisc', 'add', 'dev', link, 'handle', 'ffff:', 'ingress'],
    ...ackFilterCommands(link, 'ffff:', ACK_FLOW.ingress),
    [
      ...['filter', 'add', 'dev', link, 'parent', 'ffff:', 'protocol', 'all', 'prio', '3'],
      ...['u32', 'match', 'u32', '0', '0', 'action', 'mirred', 'egress', 'redirect', 'dev', ifb],
    ],
  ];
}

/** The ingress as `ingressCommands` makes it is there (`tc filter show dev LINK parent ffff:`). */
export function ingressInPlace(filters: string, ifb: string): boolean {
  return (
    filters.includes(`mirred (Egress Redirect to device ${ifb})`) &&
    ackShapes(filters, ACK_FLOW.ingress) === 2 * DOFFS.length
  );
}

/**
 * The tc argument lists (one `tc -batch`) that send the pure TCP ACKs leaving the link to its HTB
 * root's direct queue: the download's ACKs do not wait behind the upload's queue at its limit.
 */
export function uploadAckCommands(link: string): string[][] {
  checkIfname(link, 'shaping link');
  return ackFilterCommands(link, '1:', ACK_FLOW.upload);
}

/** The link's HTB root sends pure ACKs direct, as `uploadAckCommands` makes it (`tc filter show dev LINK parent 1:`). */
export function uploadAcksInPlace(filters: string): boolean {
  return ackShapes(filters, ACK_FLOW.upload) === 2 * DOFFS.length;
}

/** Lifts both limits and removes the ifb (the link may be gone already). */
export async function removeShaping(link: string, ifb: string, options: ShapingOptions = {}): Promise<void> {
  await applyShaping(link, ifb, { downloadKbps: null, uploadKbps: null }, options);
}

/** The HTB rates in force on the link and its ifb, kbit/s (null: none), as the kernel reports them. */
export async function readShaping(
  link: string,
  ifb: string,
  options: ShapingOptions = {},
): Promise<SpeedLimits> {
  const rate = async (dev: string): Promise<number | null> => {
    const r = await tc(['class', 'show', 'dev', dev], options);
    // `class htb 1:1 root prio 0 rate 4Mbit ceil 4Mbit ...` (SI units: 1 Kbit = 1000 bits)
    const m = /class htb 1:1 .*?\brate (\d+(?:\.\d+)?)([KMG]?)bit/.exec(r.ok ? r.stdout : '');
    if (!m) return null;
    const scale = { '': 0.001, K: 1, M: 1000, G: 1_000_000 }[m[2] as '' | 'K' | 'M' | 'G'];
    return Math.round(Number(m[1]) * scale);
  };
  return { uploadKbps: await rate(link), downloadKbps: await rate(ifb) };
}
