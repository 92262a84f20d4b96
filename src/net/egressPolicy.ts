import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { silentLogger, type Logger } from '../log.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import { applyTable, deleteTable, type NftOptions } from './nft.js';
import {
  checkAddressSpec,
  checkId,
  checkIfname,
  NftRulesetError,
  type NftRule,
  type NftTable,
  type NumRange,
} from './nftRuleset.js';

/**
 * What a proxy customer may reach, enforced by the kernel for every backend (3proxy, microsocks,
 * tinyproxy): nftables rules on the uid of the socket (`meta skuid`) in the output hook. Proxy
 * configs alone cannot do it: the `local` routing table (priority 0) comes before every per-modem
 * rule, so a socket bound to the modem's address still reaches 127.0.0.1, every address of the host
 * and, through the main table, the management network; microsocks ignores `-b` for an IPv6
 * destination (shared/reference/dataplane.md).
 *
 * For a proxy uid, a NEW connection (TCP or UDP, IPv4 or IPv6) is:
 * 1. accepted when its destination is in `allow` (the operator's exceptions; in the demo and the
 *    lab, the simulated internet);
 * 2. refused when it is an address of this host (`fib daddr type local`: loopback, every
 *    interface's address, other modems' addresses and so their proxy ports);
 * 3. through the modem's own link only: DNS (port 53, the carrier's resolvers are private
 *    addresses) is accepted, anything else goes on to the internet check, which refuses `deny`
 *    (RFC 1918, CGNAT 100.64/10, link-local, multicast, ... and the configured management
 *    networks) and accepts the rest;
 * 4. refused otherwise: through any other link (the host's uplink, an IPv6 route that does not go
 *    through the modem), or a uid whose modem is not admitted (yet).
 * Replies (`ct state established,related`) always flow: the proxies' accepted sockets answer their
 * customers, wherever those are. Everything is one table, applied whole (src/net/nft.ts).
 */

export const EGRESS_TABLE = 'mf_egress';

/** Never "the internet": special-purpose IPv4 blocks (RFC 6890) a proxy customer must not reach. */
export const DEFAULT_DENY_V4: readonly string[] = [
  '0.0.0.0/8', // "this network"
  '10.0.0.0/8', // RFC 1918
  '100.64.0.0/10', // carrier-grade NAT (RFC 6598): the carrier's side of every modem
  '127.0.0.0/8', // loopback
  '169.254.0.0/16', // link-local
  '172.16.0.0/12', // RFC 1918
  '192.0.0.0/24', // IETF protocol assignments
  '192.168.0.0/16', // RFC 1918
  '198.18.0.0/15', // benchmarking (RFC 2544): the lab's simulated internet, allowed there explicitly
  '224.0.0.0/4', // multicast
  '240.0.0.0/4', // reserved, and 255.255.255.255
];

/** The same for IPv6 (RFC 6890); only reached at all through the modem's own link. */
export const DEFAULT_DENY_V6: readonly string[] = [
  '::/128',
  '::1/128',
  '::ffff:0:0/96', // IPv4-mapped: the IPv4 rules would be bypassed
  '64:ff9b:1::/48', // local-use NAT64
  '100::/64', // discard
  'fc00::/7', // unique local
  'fe80::/10', // link-local
  'ff00::/8', // multicast
];

export interface EgressPolicySpec {
  /** Every uid a proxy may run as (base + slot for every slot of the allocation ranges). */
  uids: NumRange;
  /** Addresses or prefixes (IPv4 and IPv6) accepted before any refusal. */
  allow: readonly string[];
  /** Refused besides DEFAULT_DENY_V4/V6 (e.g. a management network on public addresses). */
  deny: readonly string[];
  /** false: nothing but `allow` (the demo, whose "internet" is one loopback address). */
  internet: boolean;
  /** The admitted modems: a proxy uid reaches the internet only through its own link. */
  modems: readonly { uid: number; link: string }[];
}

/** Address or prefix of either family; a bare address is a host prefix. */
function family(spec: string): 'ip' | 'ip6' | undefined {
  const address = spec.split('/')[0] ?? '';
  return isIPv4(address) ? 'ip' : isIPv6(address) ? 'ip6' : undefined;
}

/** Problems of an allow/deny list, as `path[i]: message` (config validation). */
export function checkPrefixes(list: unknown, path: string): string[] {
  if (!Array.isArray(list)) return [`${path}: must be an array of IPv4/IPv6 addresses or prefixes`];
  if (list.length > 1_000) return [`${path}: at most 1000 entries`];
  const problems: string[] = [];
  list.forEach((item, i) => {
    const f = typeof item === 'string' ? family(item) : undefined;
    if (typeof item !== 'string' || !f) {
      problems.push(`${path}[${i}]: not an IPv4/IPv6 address or prefix (e.g. "192.0.2.10", "2001:db8::/32")`);
      return;
    }
    try {
      checkAddressSpec(item, f, `${path}[${i}]`);
      if (item.includes('-')) throw new NftRulesetError(`${path}[${i}]: ranges are not accepted`);
    } catch (err) {
      problems.push(coerceError(err).message);
    }
  });
  return problems;
}

/**
 * One family's prefixes without those inside another of the list (nftables refuses overlapping
 * intervals in a set): `10.1.0.0/16` goes when `10.0.0.0/8` is there.
 */
export function minimalPrefixes(list: readonly string[], f: 'ip' | 'ip6'): string[] {
  const type = f === 'ip' ? 'ipv4' : 'ipv6';
  const bits = f === 'ip' ? 32 : 128;
  const parsed = [
    ...new Set(list.filter((s) => family(s) === f).map((s) => (s.includes('/') ? s : `${s}/${bits}`))),
  ].map((s) => {
    const [address = '', len = ''] = s.split('/');
    return { text: s, address, len: Number(len) };
  });
  return parsed
    .filter(
      (p) =>
        !parsed.some((q) => {
          if (q === p || q.len > p.len || (q.len === p.len && q.text >= p.text)) return false;
          const block = new BlockList();
          block.addSubnet(q.address, q.len, type);
          return block.check(p.address, type);
        }),
    )
    .map((p) => (p.len === bits ? p.address : p.text));
}

const PORT_DNS = 53;

/** The policy as one nftables table (pure; every value checked by the renderer). */
export function egressPolicyTable(spec: EgressPolicySpec): NftTable {
  const modemRules = (m: EgressPolicySpec['modems'][number]): NftRule[] => {
    const uid = checkId(m.uid, 'egress policy: modem uid');
    const link = checkIfname(m.link, 'egress policy: modem link');
    const own = [
      { match: 'skuid', value: uid },
      { match: 'oifname', value: link },
    ] as const;
    const comment = `modem uid ${uid} via ${link}`;
    return [
      {
        match: [...own, { match: 'dport', proto: 'udp', value: PORT_DNS }],
        then: [{ do: 'accept' }],
        comment,
      },
      {
        match: [...own, { match: 'dport', proto: 'tcp', value: PORT_DNS }],
        then: [{ do: 'accept' }],
        comment,
      },
      ...(spec.internet
        ? [{ match: [...own], then: [{ do: 'jump', chain: 'to_internet' }], comment } as const]
        : []),
    ];
  };
  return {
    family: 'inet',
    name: EGRESS_TABLE,
    sets: [
      { name: 'allow_v4', type: 'ipv4_addr', elements: minimalPrefixes(spec.allow, 'ip') },
      { name: 'allow_v6', type: 'ipv6_addr', elements: minimalPrefixes(spec.allow, 'ip6') },
      {
        name: 'deny_v4',
        type: 'ipv4_addr',
        elements: minimalPrefixes([...DEFAULT_DENY_V4, ...spec.deny], 'ip'),
      },
      {
        name: 'deny_v6',
        type: 'ipv6_addr',
        elements: minimalPrefixes([...DEFAULT_DENY_V6, ...spec.deny], 'ip6'),
      },
    ],
    chains: [
      {
        name: 'egress_out',
        base: { type: 'filter', hook: 'output', priority: 'filter', policy: 'accept' },
        rules: [
          {
            match: [{ match: 'skuid', value: spec.uids }],
            then: [{ do: 'jump', chain: 'proxy_out' }],
            comment: 'every proxy uid',
          },
        ],
      },
      {
        name: 'proxy_out',
        rules: [
          {
            match: [{ match: 'ctstate', value: ['established', 'related'] }],
            then: [{ do: 'accept' }],
            comment: 'replies to customers and to the proxies own connections',
          },
          {
            match: [{ match: 'daddr', family: 'ip', value: { set: 'allow_v4' } }],
            then: [{ do: 'accept' }],
            comment: 'allow',
          },
          {
            match: [{ match: 'daddr', family: 'ip6', value: { set: 'allow_v6' } }],
            then: [{ do: 'accept' }],
            comment: 'allow',
          },
          {
            match: [{ match: 'daddrType', value: 'local' }],
            then: [{ do: 'counter' }, { do: 'reject' }],
            comment: 'this host: loopback, its addresses, other modems ports',
          },
          ...spec.modems.flatMap(modemRules),
          { then: [{ do: 'counter' }, { do: 'reject' }], comment: 'not through its own modem' },
        ],
      },
      {
        name: 'to_internet',
        rules: [
          {
            match: [{ match: 'daddr', family: 'ip', value: { set: 'deny_v4' } }],
            then: [{ do: 'counter' }, { do: 'reject' }],
            comment: 'deny',
          },
          {
            match: [{ match: 'daddr', family: 'ip6', value: { set: 'deny_v6' } }],
            then: [{ do: 'counter' }, { do: 'reject' }],
            comment: 'deny',
          },
          { then: [{ do: 'accept' }], comment: 'the internet' },
        ],
      },
    ],
  };
}

export interface EgressPolicyOptions extends Omit<EgressPolicySpec, 'modems'> {
  /** The proxies' network namespace (the table goes there); unset: ours. */
  netns?: string | undefined;
  nft?: Omit<NftOptions, 'netns'> | undefined;
  log?: Logger | undefined;
}

/**
 * The egress policy of one host's proxies. `start()` applies it with no modem admitted (every proxy
 * uid refused everything but `allow`) before any proxy runs; `admit(uid, link)` lets a modem's
 * proxies out through its own link and resolves once the kernel has the rule (the proxy starts
 * after it); `release(uid)` takes it back. Applies are serialised and coalesced. `stop()` removes
 * the table once every proxy has stopped; a crash leaves it in place (fail closed), and so does
 * `handover()` (the proxies stay serving for the next run, which applies the table again).
 */
export class EgressPolicy {
  /** uid → link, and how many data planes admitted it (a replacement may admit before the old one releases). */
  private readonly modems = new Map<number, { link: string; count: number }>();
  private applied: Promise<void> = Promise.resolve();
  private pending: Promise<void> | undefined;
  private stopped = false;
  private readonly log: Logger;

  constructor(private readonly options: EgressPolicyOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'egress-policy' });
    // a bad value fails here, at construction, not at the first modem
    egressPolicyTable(this.spec());
  }

  spec(): EgressPolicySpec {
    const { uids, allow, deny, internet } = this.options;
    return {
      uids,
      allow,
      deny,
      internet,
      modems: [...this.modems].sort(([a], [b]) => a - b).map(([uid, { link }]) => ({ uid, link })),
    };
  }

  private nftOptions(): NftOptions {
    return { ...this.options.nft, netns: this.options.netns };
  }

  /**
   * Applies the table (replacing whatever a previous run left, whole). `carried`: modems whose
   * proxies a previous run left serving, admitted as that run had them (their open connections and
   * new ones keep working until their data planes adopt or replace them); each is released like
   * any admission.
   */
  async start(carried: readonly { uid: number; link: string }[] = []): Promise<void> {
    this.stopped = false;
    for (const { uid, link } of carried) {
      const held = this.modems.get(uid);
      if (!held) this.modems.set(uid, { link, count: 1 });
      else if (held.link === link) held.count++;
    }
    await this.apply();
    this.log.info(
      { uids: this.options.uids, netns: this.options.netns, carried: carried.length },
      'egress policy applied',
    );
  }

  async admit(uid: number, link: string): Promise<void> {
    if (this.stopped)
      throw new ModemfleetError(
        'egress_policy_stopped',
        'the egress policy is not applied: no proxy may start',
      );
    const held = this.modems.get(uid);
    this.modems.set(uid, { link, count: (held?.count ?? 0) + 1 });
    if (held?.link === link) return this.applied;
    await this.apply();
  }

  async release(uid: number, link: string): Promise<void> {
    const held = this.modems.get(uid);
    if (!held || this.stopped) return;
    if (held.count > 1) {
      held.count--;
      return;
    }
    if (held.link !== link) return;
    this.modems.delete(uid);
    await this.apply();
  }

  /** One apply after every change so far (coalesced: many changes at once cost one or two). */
  private apply(): Promise<void> {
    if (this.pending) return this.pending;
    const next = this.applied
      .catch(() => undefined)
      .then(async () => {
        this.pending = undefined;
        await applyTable(egressPolicyTable(this.spec()), this.nftOptions());
      });
    this.pending = next;
    this.applied = next;
    return next;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.modems.clear();
    await this.applied.catch(() => undefined);
    await deleteTable('inet', EGRESS_TABLE, this.nftOptions());
  }

  /**
   * The supervisor hands its proxies over to the next run: the table stays as it is (the proxies
   * left serving keep their admissions; the next run's `start` replaces it whole). Nothing more
   * is admitted here.
   */
  async handover(): Promise<void> {
    this.stopped = true;
    await this.applied.catch(() => undefined);
    this.modems.clear();
  }
}
