import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyAccessList, removeAccessList } from '../../src/net/accessList.js';
import { ip, ipBatch } from '../../src/net/ip.js';
import { deleteTable } from '../../src/net/nft.js';
import { TrafficAccounting } from '../../src/net/trafficAccounting.js';
import { NO_LIMIT, type PartReading, type TrafficPart } from '../../src/net/trafficTable.js';
import { bulk, startBulkServer } from '../helpers/trafficBulkLab.js';
import { until } from '../helpers/until.js';

/**
 * The kernel side of traffic accounting on real nftables, in two namespaces joined by a veth (MTU
 * 1500, as a customer's network): a server in `srv` stands for a proxy port, a client in `cust` for
 * the customer. What the counters say is what the client's socket wrote and read, to the byte.
 */

const name = `mfta${randomBytes(2).toString('hex')}`;
const srv = `${name}-srv`;
const cust = `${name}-cust`;
const SERVER = '10.231.0.1';
const [HTTP, SOCKS] = [24_101, 24_102];
const part: TrafficPart = { slot: 7, imei: '866834040000017', httpPort: HTTP, socksPort: SOCKS, uid: 0 };
let servers: { stop(): Promise<void> }[] = [];
let accounting: TrafficAccounting;

const direct = (port: number) => ({ kind: 'direct' as const, host: SERVER, port });
const ports = { slot: part.slot, httpPort: HTTP, socksPort: SOCKS };
const target = (port: number) => ({ host: SERVER, port });
const reading = async (a = accounting): Promise<PartReading> => {
  const r = (await a.read()).parts.get(part.slot)?.reading;
  if (!r) throw new Error('no part');
  return r;
};

beforeAll(async () => {
  for (const ns of [srv, cust]) await ip(['netns', 'add', ns]);
  await ipBatch([`link add ta0 netns ${srv} type veth peer name tb0 netns ${cust}`]);
  await ipBatch(['link set lo up', `addr add ${SERVER}/30 dev ta0`, 'link set ta0 up'], { netns: srv });
  await ipBatch(['link set lo up', 'addr add 10.231.0.2/30 dev tb0', 'link set tb0 up'], { netns: cust });
  servers = [await startBulkServer(srv, '0.0.0.0', HTTP), await startBulkServer(srv, '0.0.0.0', SOCKS)];
  accounting = new TrafficAccounting({ netns: srv, probeUid: null });
  await accounting.start();
  await accounting.admit(part, { limit: NO_LIMIT, closed: false });
}, 60_000);

afterAll(async () => {
  for (const s of servers) await s.stop().catch(() => undefined);
  for (const ns of [srv, cust]) await ip(['netns', 'del', ns]).catch(() => undefined);
});

describe('traffic counted by the kernel', () => {
  it('payload both ways is what the customer socket wrote and read (retransmitted segments count again)', async () => {
    const before = await reading();
    const a = await bulk(cust, direct(HTTP), target(HTTP), 3_000_000, 5_000_000);
    const b = await bulk(cust, direct(SOCKS), target(SOCKS), 1_234_567, 89);
    // many small exchanges: headers weigh most here
    const mid = await reading();
    const small = await Promise.all(
      Array.from({ length: 20 }, () => bulk(cust, direct(HTTP), target(HTTP), 100, 300)),
    );
    const end = await reading();
    const smallPayload = end.upload + end.download - mid.upload - mid.download;
    const smallL3 = end.l3Upload + end.l3Download - mid.l3Upload - mid.l3Download;
    console.log(
      `traffic accounting, small exchanges (100 B up, 300 B down, a connection each): payload ${smallPayload}, L3 ${smallL3} (+${((100 * (smallL3 - smallPayload)) / smallPayload).toFixed(0)} %)`,
    );
    for (const r of [a, b, ...small]) expect(r.error).toBeNull();
    const written = [a, b, ...small].reduce((n, r) => n + r.bytesWritten, 0);
    const read = [a, b, ...small].reduce((n, r) => n + r.bytesRead, 0);
    const after = await reading();
    const up = after.upload - before.upload;
    const down = after.download - before.download;
    // exact, but for segments sent twice (TCP retransmits: tail loss probes on a busy host)
    console.log(
      `traffic accounting: counted upload ${up} of ${written} written, download ${down} of ${read} read`,
    );
    expect(up).toBeGreaterThanOrEqual(written);
    expect(down).toBeGreaterThanOrEqual(read);
    // (a CI run on a loaded machine retransmitted 1.3 % of a download: they crossed the wire again
    // and count again; the e2e through real proxies holds to 1 %)
    expect(up).toBeLessThan(written * 1.03);
    expect(down).toBeLessThan(read * 1.03);
    // what L3 counting would have said (headers included): measured, for the docs
    const l3Up = after.l3Upload - before.l3Upload;
    const l3Down = after.l3Download - before.l3Download;
    console.log(
      `traffic accounting, veth MTU 1500: upload payload ${written} L3 ${l3Up} (+${((100 * (l3Up - written)) / written).toFixed(2)} %), download payload ${read} L3 ${l3Down} (+${((100 * (l3Down - read)) / read).toFixed(2)} %)`,
    );
    expect(l3Up).toBeGreaterThan(written);
  }, 120_000);

  it('a supervisor restart finds the counters as they were and keeps them', async () => {
    // a part as a previous version left it: a quota rule though it has no limit
    for (const chain of [`m${part.slot}_in`, `m${part.slot}_out`]) {
      const rule = ['inet', 'mf_traffic', chain, 'quota', 'name', `q_${part.slot}`, 'drop'];
      await execa('ip', ['netns', 'exec', srv, 'nft', 'insert', 'rule', ...rule]);
    }
    expect((await accounting.read()).parts.get(part.slot)?.state.quotaRules).toBe(true);
    const before = await reading();
    const again = new TrafficAccounting({ netns: srv, probeUid: null });
    await again.start();
    // its rules as its limit needs them (none), its counters as they were
    expect((await again.read()).parts.get(part.slot)?.state.quotaRules).toBe(false);
    await again.admit(part, { limit: NO_LIMIT, closed: false });
    expect(await reading(again)).toEqual(before);
    const r = await bulk(cust, direct(HTTP), target(HTTP), 10_000, 20_000);
    const after = await reading(again);
    expect(after.token).toBe(before.token);
    expect(after.download - before.download).toBe(r.bytesRead);
    accounting = again;
  }, 60_000);

  it("a client an allowlist redirects to the password-less companions is counted and refused as the port's own", async () => {
    // microsocks+tinyproxy with an allowlist (src/net/accessList.ts): the kernel redirects the
    // listed clients from the modem's ports to companions on other ports, before the input hook
    const open = { http: HTTP + 2_000, socks: SOCKS + 2_000 };
    servers.push(await startBulkServer(srv, '0.0.0.0', open.http));
    const spec = {
      slot: part.slot,
      allowlist: ['10.231.0.2/32'],
      httpPort: HTTP,
      socksPort: SOCKS,
      openHttpPort: open.http,
      openSocksPort: open.socks,
    };
    await applyAccessList(spec, { netns: srv });
    try {
      const before = await reading();
      const r = await bulk(cust, direct(HTTP), target(HTTP), 300_000, 700_000);
      expect(r.error).toBeNull();
      const after = await reading();
      expect(after.upload - before.upload).toBeGreaterThanOrEqual(r.bytesWritten);
      expect(after.upload - before.upload).toBeLessThan(r.bytesWritten * 1.01);
      expect(after.download - before.download).toBeGreaterThanOrEqual(r.bytesRead);
      expect(after.download - before.download).toBeLessThan(r.bytesRead * 1.01);
      // closed: refused like any other customer of the port
      await accounting.change([{ ...ports, closed: true }]);
      expect((await bulk(cust, direct(HTTP), target(HTTP), 10, 10, 30_000)).error).toBe('ECONNREFUSED');
    } finally {
      await accounting.change([{ ...ports, closed: false }]);
      await removeAccessList(part.slot, { netns: srv });
    }
  }, 60_000);

  it('a quota stops the port at its limit (stalled); closed, the connection ends and new ones are refused; reopened at once', async () => {
    const before = await reading();
    const rules = async (): Promise<boolean | undefined> =>
      (await accounting.read()).parts.get(part.slot)?.state.quotaRules;
    // no limit: no rule evaluates the quota; set live, the part's chains get them (counters kept)
    expect(await rules()).toBe(false);
    const allowance = 2_000_000;
    await accounting.change([{ ...ports, limit: before.quotaUsed + allowance }]);
    expect(await rules()).toBe(true);
    expect((await reading()).token).toBe(before.token);
    const pending = bulk(cust, direct(HTTP), target(HTTP), 0, 10_000_000, 90_000);
    // the kernel stops the bytes at the limit; the connection stalls
    await until(async () => (await reading()).quotaUsed >= before.quotaUsed + allowance, {
      timeoutMs: 30_000,
      intervalMs: 200,
    });
    await new Promise((r) => setTimeout(r, 1_000));
    const stalled = await reading();
    const through = stalled.download + stalled.upload - before.download - before.upload;
    // stopped at its limit: L3 bytes, so a little less payload than the allowance
    expect(through).toBeLessThanOrEqual(allowance);
    expect(through).toBeGreaterThan(allowance * 0.9);
    // closed: the server's next retransmission reaches the customer, whose answer is reset
    await accounting.change([{ ...ports, closed: true }]);
    const cut = await pending;
    expect(cut.complete).toBe(false);
    expect([null, 'ECONNRESET']).toContain(cut.error);
    const ended = await reading();
    // what the customer got of the retransmission counts; a segment or two at most
    expect(ended.download - stalled.download).toBeLessThan(200_000);
    expect(cut.bytesRead).toBeLessThanOrEqual(ended.download - before.download);
    const refused = await bulk(cust, direct(SOCKS), target(SOCKS), 10, 10, 30_000);
    expect(refused.error).toBe('ECONNREFUSED');
    // refused segments are not the customer's traffic; the server's retransmissions to the cut
    // connection (its customer's answers are reset, not it) still pass and count while closed
    const shut = await reading();
    expect(shut.upload).toBe(ended.upload);
    expect(shut.download - ended.download).toBeLessThan(200_000);
    // reopened: the kernel reports at most the limit as used (dropped retries used more): from zero
    await accounting.change([{ ...ports, limit: NO_LIMIT, reset: true, closed: false }]);
    expect(await rules()).toBe(false);
    const open = await bulk(cust, direct(SOCKS), target(SOCKS), 10, 10, 30_000);
    expect(open.error).toBeNull();
    expect(open.payload).toBe(10);
    expect((await reading()).closed).toBe(false);
    // open again, the server's next retransmission to the cut connection is reset by the
    // customer's kernel: it ends, and later tests count no leftover segment of it
    await until(
      async () =>
        (await execa('ip', ['netns', 'exec', srv, 'ss', '-Htn', `( sport = :${HTTP} )`])).stdout.trim() ===
        '',
      { timeoutMs: 60_000, intervalMs: 250, message: "the cut connection's server side gone" },
    );
  }, 150_000);

  it('a slot that serves another modem: the old counters are read a last time, the new count from zero', async () => {
    const replaced: PartReading[] = [];
    accounting.onReplaced = (r) => replaced.push(r);
    const before = await reading();
    const other = { ...part, imei: '866834040000025' };
    await accounting.admit(other, { limit: NO_LIMIT, closed: false });
    // (the last reading: a little more than before when a leftover retransmission got through)
    expect(replaced).toHaveLength(1);
    expect(replaced[0]).toMatchObject({ imei: before.imei, token: before.token });
    expect(replaced[0]!.download).toBeGreaterThanOrEqual(before.download);
    const now = await reading();
    expect(now).toMatchObject({ imei: other.imei, download: 0, upload: 0 });
    expect(now.token).not.toBe(before.token);
    Object.assign(part, other);
  }, 60_000);

  it('a table deleted by hand is created again with the parts it had, counting from zero', async () => {
    await bulk(cust, direct(HTTP), target(HTTP), 1_000, 1_000);
    const before = await reading();
    expect(before.download).toBeGreaterThan(0);
    await deleteTable('inet', 'mf_traffic', { netns: srv });
    const after = await reading();
    expect(after).toMatchObject({ imei: part.imei, download: 0, upload: 0 });
    expect(after.token).not.toBe(before.token);
    const r = await bulk(cust, direct(HTTP), target(HTTP), 500, 700);
    expect((await reading()).download).toBe(r.bytesRead);
  }, 60_000);
});
