import { describe, expect, it } from 'vitest';
import { renderTable } from '../../src/net/nftRuleset.js';
import { DEFAULT_NAT_POOL, carrierNatTable, checkNatPool } from '../../src/sim/lab/carrierNat.js';
import { NetLab } from '../../src/sim/lab/netLab.js';

describe('lab carrier NAT', () => {
  it('renders SNAT of the modem links to the pool by a hash of the source address', () => {
    const text = renderTable(carrierNatTable(['203.0.113.1', '203.0.113.2'], 'cr'));
    expect(text).toContain('type nat hook input priority 100');
    expect(text).toContain(
      'iifname "cr*" snat ip to jhash ip saddr mod 2 map { 0 : 203.0.113.1, 1 : 203.0.113.2 }',
    );
  });

  it('accepts the default pool and checks every address of a pool', () => {
    expect(checkNatPool(DEFAULT_NAT_POOL)).toEqual([...DEFAULT_NAT_POOL]);
    for (const a of DEFAULT_NAT_POOL) expect(a).toMatch(/^203\.0\.113\.\d+$/);
    const bad: [unknown, RegExp][] = [
      [[], /1-256/],
      ['203.0.113.1', /1-256/],
      [Array.from({ length: 257 }, (_, i) => `203.0.${113 + (i >> 8)}.${i & 255}`), /1-256/],
      [['203.0.113.1; flush ruleset'], /is not an IPv4 address/],
      [['2001:db8::1'], /is not an IPv4 address/],
      [['100.65.1.2'], /carrier's private range/],
      [['198.18.0.1'], /echo network/],
      [['192.168.77.2'], /management network/],
      [['127.0.0.1'], /loopback/],
      [['224.0.0.1'], /multicast/],
      [['203.0.113.1', '203.0.113.1'], /listed twice/],
    ];
    for (const [pool, message] of bad) expect(() => checkNatPool(pool)).toThrow(message);
  });

  it('NetLab: NAT is off unless asked; the pool is checked up front; inNatPool', () => {
    expect(new NetLab({ name: 'mfu', modems: 1 }).natPool).toBeNull();
    expect(() => new NetLab({ name: 'mfu', modems: 1, nat: { pool: ['10.0.0.300'] } })).toThrow(
      /not an IPv4 address/,
    );
    const lab = new NetLab({ name: 'mfu', modems: 2, nat: { pool: DEFAULT_NAT_POOL } });
    expect(lab.natPool).toEqual(DEFAULT_NAT_POOL);
    expect(lab.inNatPool(DEFAULT_NAT_POOL[0] ?? '')).toBe(true);
    expect(lab.inNatPool('100.65.1.20')).toBe(false);
  });
});
