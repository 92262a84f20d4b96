import { describe, expect, it } from 'vitest';
import {
  DOFFS,
  NO_LIMIT,
  TRAFFIC_VERSION,
  addPartLines,
  counterName,
  parseTag,
  parseTrafficTable,
  partTag,
  quotaRuleLines,
  removePartLines,
  renderBase,
  changeLines,
  type TrafficPart,
} from '../../src/net/trafficTable.js';

const part: TrafficPart = { slot: 3, imei: '866834040000017', httpPort: 20003, socksPort: 30003, uid: 61003 };

/** `nft -j list table` of a table holding `part`, whose counters saw these packets. */
function listing(
  packets: { dir: 'u' | 'd'; doff: number; v6?: boolean; payload: number }[],
  quota = { bytes: 1e6, used: 0 },
  closed: number[] = [],
  quotaRules: ('m3_in' | 'm3_out')[] = ['m3_in', 'm3_out'],
) {
  const counters = new Map<string, { packets: number; bytes: number }>();
  for (const dir of ['u', 'd'] as const) {
    for (const doff of DOFFS) counters.set(counterName(dir, 3, doff), { packets: 0, bytes: 0 });
    counters.set(counterName(dir, 3, 'v6'), { packets: 0, bytes: 0 });
  }
  for (const p of packets) {
    const c = counters.get(counterName(p.dir, 3, p.doff))!;
    c.packets++;
    c.bytes += (p.v6 ? 40 : 20) + 4 * p.doff + p.payload;
    if (p.v6) counters.get(counterName(p.dir, 3, 'v6'))!.packets++;
  }
  return {
    nftables: [
      { metainfo: { version: '1.0.6' } },
      { table: { family: 'inet', name: 'mf_traffic', handle: 1 } },
      ...[...counters].map(([name, c]) => ({
        counter: { family: 'inet', name, table: 'mf_traffic', handle: 2, ...c },
      })),
      {
        quota: {
          family: 'inet',
          name: 'q_3',
          table: 'mf_traffic',
          handle: 9,
          comment: partTag(part, '0123456789abcdef'),
          bytes: quota.bytes,
          used: quota.used,
          inv: true,
        },
      },
      { set: { family: 'inet', name: 'closed', table: 'mf_traffic', type: 'inet_service', elem: closed } },
      {
        rule: {
          family: 'inet',
          table: 'mf_traffic',
          chain: 'customer_in',
          handle: 3,
          comment: TRAFFIC_VERSION,
        },
      },
      {
        rule: {
          family: 'inet',
          table: 'mf_traffic',
          chain: 'customer_out',
          handle: 4,
          comment: TRAFFIC_VERSION,
        },
      },
      ...quotaRules.map((chain, i) => ({
        rule: {
          family: 'inet',
          table: 'mf_traffic',
          chain,
          handle: 10 + i,
          expr: [{ quota: 'q_3' }, { drop: null }],
        },
      })),
    ],
  };
}

describe('the traffic table', () => {
  it('payload is L3 bytes minus each packet header, whatever its TCP options, IPv4 and IPv6', () => {
    const state = parseTrafficTable(
      listing([
        { dir: 'u', doff: 10, payload: 0 }, // SYN with options
        { dir: 'd', doff: 10, payload: 0 }, // SYN-ACK
        { dir: 'u', doff: 8, payload: 120 }, // request, timestamps
        { dir: 'd', doff: 8, payload: 65_000 }, // a GSO super-packet
        { dir: 'd', doff: 11, payload: 1_448 }, // SACK block
        { dir: 'u', doff: 8, payload: 0 }, // pure ACK
        { dir: 'u', doff: 5, v6: true, payload: 1_000 },
        { dir: 'd', doff: 15, v6: true, payload: 7 },
      ]),
    );
    expect(state.current).toBe(true);
    const reading = state.parts.get(3)!.reading;
    expect(reading).toMatchObject({
      imei: part.imei,
      token: '0123456789abcdef',
      upload: 1_120,
      download: 66_455,
      quotaLimit: 1e6,
    });
    expect(reading.l3Upload).toBe(60 + 172 + 52 + 1_060);
    expect(state.parts.get(3)!.state).toMatchObject({
      ...part,
      token: '0123456789abcdef',
      closed: false,
      quotaRules: true,
    });
    // a part without a limit has no quota rules (in either chain: both, or it counts as none)
    expect(parseTrafficTable(listing([], undefined, [], [])).parts.get(3)?.state.quotaRules).toBe(false);
    expect(parseTrafficTable(listing([], undefined, [], ['m3_in'])).parts.get(3)?.state.quotaRules).toBe(
      false,
    );
    expect(parseTrafficTable(listing([], undefined, [20003, 30003])).parts.get(3)?.reading.closed).toBe(true);
  });

  it('a table without the version marks is not current; a part missing a counter is not read', () => {
    const json = listing([]);
    json.nftables = json.nftables.filter(
      (i) => !('rule' in i) && !('counter' in i && i.counter.name === 'u3_7'),
    );
    const state = parseTrafficTable(json);
    expect(state.current).toBe(false);
    expect(state.parts.size).toBe(0);
    expect(parseTrafficTable(null)).toEqual({ current: false, parts: new Map() });
  });

  it('the part tag round-trips; anything else is no tag', () => {
    expect(parseTag(partTag(part, 'abcdef12'))).toEqual({ ...part, slot: undefined, token: 'abcdef12' });
    expect(parseTag(partTag({ ...part, uid: null }, 'abcdef12'))).toMatchObject({ uid: null });
    for (const bad of [undefined, 'imei=1 ports=1,2 uid=- i=abcdef12', `${partTag(part, 'abcdef12')} x`])
      expect(parseTag(bad)).toBeNull();
  });

  it('renders the base and a part from checked numbers only', () => {
    const base = renderBase(0, false).text;
    expect(base).toContain('type filter hook input priority 10; policy accept;');
    expect(base).toContain(
      'meta skuid 0 meta l4proto tcp ct original proto-dst @ports ct state new ct mark set 0x4d460001',
    );
    // a connection redirected to other ports (an allowlist's companions) is its port's own, once
    expect(base).toContain(
      'ct status dnat meta l4proto tcp ct direction original tcp dport != @ports ct original proto-dst vmap @ports_in',
    );
    expect(base).toContain(
      'ct status dnat meta l4proto tcp ct direction reply tcp sport != @ports ct original proto-dst vmap @ports_out',
    );
    expect(base).not.toContain('delete table');
    expect(renderBase(null, true).text).toMatch(/^table inet mf_traffic\ndelete table inet mf_traffic\n/);
    const lines = addPartLines(part, '0123456789abcdef', 5_000);
    expect(lines).toContain(
      'add quota inet mf_traffic q_3 { over 5000 bytes; comment "imei=866834040000017 ports=20003,30003 uid=61003 i=0123456789abcdef"; }',
    );
    expect(lines).toContain('add rule inet mf_traffic m3_out meta skuid != 61003 return');
    expect(lines).toContain(
      'add element inet mf_traffic ports_in { 20003 : jump m3_in, 30003 : jump m3_in }',
    );
    expect(lines.filter((l) => l.startsWith('add counter'))).toHaveLength(24);
    expect(removePartLines(part)).toContain('delete quota inet mf_traffic q_3');
    expect(changeLines([{ slot: 3, httpPort: 20003, socksPort: 30003, limit: 1 }])).toEqual([
      'add quota inet mf_traffic q_3 { over 1 bytes; }',
    ]);
    // reopened: its use reset, then the new limit, then its ports out of `closed` (idempotent)
    expect(
      changeLines([{ slot: 3, httpPort: 20003, socksPort: 30003, limit: 500, reset: true, closed: false }]),
    ).toEqual([
      'reset quota inet mf_traffic q_3',
      'add quota inet mf_traffic q_3 { over 500 bytes; }',
      'add element inet mf_traffic closed { 20003, 30003 }',
      'delete element inet mf_traffic closed { 20003, 30003 }',
    ]);
    expect(changeLines([{ slot: 3, httpPort: 20003, socksPort: 30003, closed: true }])).toEqual([
      'add element inet mf_traffic closed { 20003, 30003 }',
    ]);
    expect(lines).toContain('add rule inet mf_traffic m3_in tcp dport @closed reject with tcp reset');
    expect(lines).toContain(
      'add rule inet mf_traffic m3_in ct status dnat meta l4proto tcp ct original proto-dst @closed reject with tcp reset',
    );
    expect(lines).toContain(
      'add rule inet mf_traffic m3_out tcp sport != @closed ct original proto-dst != @closed quota name "q_3" drop',
    );
    expect(lines).toContain('add rule inet mf_traffic m3_in quota name "q_3" drop');
  });

  it('a part without a limit has no quota rule; a limit set or lifted rewrites its chains alone', () => {
    const free = addPartLines(part, '0123456789abcdef', NO_LIMIT);
    // the quota object is there (it holds the tag), no rule evaluates it
    expect(free).toContain(
      `add quota inet mf_traffic q_3 { over ${NO_LIMIT} bytes; comment "imei=866834040000017 ports=20003,30003 uid=61003 i=0123456789abcdef"; }`,
    );
    expect(free.filter((l) => l.includes('quota name'))).toEqual([]);
    // everything else as with a limit
    const limited = addPartLines(part, '0123456789abcdef', 5_000);
    expect(limited.filter((l) => !l.includes('quota'))).toEqual(free.filter((l) => !l.includes('quota')));
    const on = quotaRuleLines(part, true);
    // flushed and written again, in the order a new part has them; no counter, quota or element
    expect(on).toEqual([
      'flush chain inet mf_traffic m3_in',
      ...limited.filter((l) => l.startsWith('add rule inet mf_traffic m3_in ')),
      'flush chain inet mf_traffic m3_out',
      ...limited.filter((l) => l.startsWith('add rule inet mf_traffic m3_out ')),
    ]);
    expect(quotaRuleLines(part, false)).toEqual([
      'flush chain inet mf_traffic m3_in',
      ...free.filter((l) => l.startsWith('add rule inet mf_traffic m3_in ')),
      'flush chain inet mf_traffic m3_out',
      ...free.filter((l) => l.startsWith('add rule inet mf_traffic m3_out ')),
    ]);
    expect(() => quotaRuleLines({ ...part, uid: -1 }, true)).toThrow(/uid/);
  });

  it('refuses what is not a slot, an IMEI, a port, a uid or a limit', () => {
    expect(() => addPartLines({ ...part, imei: '86683404000001"' }, 'abcdef12', 1)).toThrow(/invalid|IMEI/);
    expect(() => addPartLines({ ...part, slot: -1 }, 'abcdef12', 1)).toThrow(/slot/);
    expect(() => addPartLines({ ...part, httpPort: 70_000 }, 'abcdef12', 1)).toThrow(/port/);
    expect(() => addPartLines({ ...part, socksPort: part.httpPort }, 'abcdef12', 1)).toThrow(/both/);
    expect(() => addPartLines({ ...part, uid: 1.5 }, 'abcdef12', 1)).toThrow(/uid/);
    expect(() => addPartLines(part, 'ABC"', 1)).toThrow(/token/);
    expect(() => changeLines([{ slot: 3, httpPort: 1, socksPort: 2, limit: 0 }])).toThrow(/limit/);
    expect(() => changeLines([{ slot: 3, httpPort: 1, socksPort: 2, limit: 2 ** 60 }])).toThrow(/limit/);
    expect(() => changeLines([{ slot: 3, httpPort: 0, socksPort: 2, closed: true }])).toThrow(/port/);
  });
});
