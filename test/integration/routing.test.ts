import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ip, ipJson } from '../../src/net/ip.js';
import { applyRoute, checkRoute, removeRoute, verifyRoute, type ModemRoute } from '../../src/net/routing.js';

/** Real routing in a throw-away network namespace: the host's own routing is never touched. */

let ns: string;
beforeEach(async () => {
  ns = `mf-rt-${randomBytes(3).toString('hex')}`;
  await execa('ip', ['netns', 'add', ns]);
  // a veth pair stands for the modem's link (an Ethernet-style link: a gateway on the other end)
  await ip(['link', 'add', 'wwan0', 'type', 'veth', 'peer', 'name', 'carrier0'], { netns: ns });
  await ip(['addr', 'add', '10.77.0.1/29', 'dev', 'carrier0'], { netns: ns });
  await ip(['link', 'set', 'carrier0', 'up'], { netns: ns });
});
afterEach(async () => {
  await execa('ip', ['netns', 'del', ns], { reject: false });
});

const spec = (over: Partial<ModemRoute> = {}): ModemRoute => ({
  iface: 'wwan0',
  address: '10.77.0.2',
  prefix: 29,
  gateway: '10.77.0.1',
  table: 10_002,
  priority: 1_002,
  ...over,
});

const rulesAt = async (priority: number) =>
  (await ipJson<{ priority?: number }>(['rule', 'show'], { netns: ns })).filter(
    (r) => r.priority === priority,
  );

describe('modem routing in a network namespace', () => {
  it('applies table, blackhole and rule; applying twice equals once; verified from ip -json', async () => {
    const r = spec({ uid: 40_002 });
    await applyRoute(r, { netns: ns });
    await applyRoute(r, { netns: ns });
    expect(await verifyRoute(r, { netns: ns })).toEqual([]);
    expect(await rulesAt(1_002)).toHaveLength(1);
    expect(await rulesAt(1_003)).toHaveLength(1);
    const routes = await ipJson<{ type?: string; dst?: string; metric?: number }>(
      ['route', 'show', 'table', '10002'],
      { netns: ns },
    );
    expect(routes.filter((x) => x.type === 'blackhole')).toEqual([
      expect.objectContaining({ dst: 'default', metric: 4294967295 }),
    ]);
    // the kernel picks this table for traffic from the modem's address
    const got = await ip(['route', 'get', '192.0.2.1', 'from', '10.77.0.2'], { netns: ns });
    expect(got).toMatch(/via 10\.77\.0\.1 dev wwan0 table 10002/);
  });

  it('stale duplicate rules at its priority are removed first', async () => {
    // left by an earlier run or by hand: several rules at the same priority
    for (let i = 1; i <= 3; i++)
      await ip(['rule', 'add', 'priority', '1002', 'from', `10.1.1.${i}`, 'lookup', '99'], { netns: ns });
    expect(await rulesAt(1_002)).toHaveLength(3);
    await applyRoute(spec(), { netns: ns });
    expect(await rulesAt(1_002)).toEqual([expect.objectContaining({ src: '10.77.0.2', table: '10002' })]);
  });

  it('fails closed: without the modem route, traffic from its address hits the blackhole', async () => {
    const r = spec();
    await applyRoute(r, { netns: ns });
    await ip(['route', 'del', 'default', 'via', '10.77.0.1', 'dev', 'wwan0', 'table', '10002'], {
      netns: ns,
    });
    expect(await verifyRoute(r, { netns: ns })).toEqual([`table 10002: no default route through wwan0`]);
    const got = await ip(['route', 'get', '192.0.2.1', 'from', '10.77.0.2'], { netns: ns }).catch(
      (e: Error) => e.message,
    );
    expect(got).toMatch(/blackhole|Invalid argument|No route/);
    await applyRoute(r, { netns: ns }); // re-applied after the fault
    expect(await verifyRoute(r, { netns: ns })).toEqual([]);
  });

  it('link down flushes the table; re-applying restores it', async () => {
    const r = spec();
    await applyRoute(r, { netns: ns });
    await ip(['link', 'set', 'wwan0', 'down'], { netns: ns });
    await ip(['link', 'set', 'wwan0', 'up'], { netns: ns });
    expect(await verifyRoute(r, { netns: ns })).not.toEqual([]);
    await applyRoute(r, { netns: ns });
    expect(await verifyRoute(r, { netns: ns })).toEqual([]);
  });

  it('rotation: the new address replaces the old one on the link and in the rule', async () => {
    await applyRoute(spec(), { netns: ns });
    await applyRoute(spec({ address: '10.77.0.3' }), { netns: ns }, '10.77.0.2');
    const addrs = await ipJson<{ addr_info: { local: string }[] }>(['addr', 'show', 'dev', 'wwan0'], {
      netns: ns,
    });
    const locals = addrs.flatMap((a) => a.addr_info.map((i) => i.local)).filter((a) => a.startsWith('10.77'));
    expect(locals).toEqual(['10.77.0.3']);
    expect(await rulesAt(1_002)).toEqual([expect.objectContaining({ src: '10.77.0.3' })]);
  });

  it('raw-ip links: a default route by device only', async () => {
    const r = spec({ gateway: null });
    await applyRoute(r, { netns: ns });
    expect(await verifyRoute(r, { netns: ns })).toEqual([]);
  });

  it('removal takes rules and table away; removing twice is fine', async () => {
    const r = spec({ uid: 40_002 });
    await applyRoute(r, { netns: ns });
    await removeRoute(r, { netns: ns });
    await removeRoute(r, { netns: ns });
    expect(await rulesAt(1_002)).toEqual([]);
    expect(await rulesAt(1_003)).toEqual([]);
    expect(await ipJson(['route', 'show', 'table', '10002'], { netns: ns })).toEqual([]);
  });

  it('bad input is refused before anything runs', async () => {
    expect(checkRoute(spec({ table: 254 }))).toEqual([expect.stringMatching(/253-255/)]);
    expect(checkRoute(spec({ iface: 'eth0; reboot', address: '1.2.3' }))).toHaveLength(2);
    await expect(applyRoute(spec({ priority: 40_000 }), { netns: ns })).rejects.toMatchObject({
      code: 'invalid_route',
    });
    await expect(ip(['link', 'show'], { netns: 'bad ns' })).rejects.toMatchObject({ code: 'invalid_netns' });
    expect(await rulesAt(40_000)).toEqual([]);
  });
});
