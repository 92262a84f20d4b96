import { randomBytes } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ip, ipBatch } from '../../src/net/ip.js';
import { applyShaping, readShaping, removeShaping, uploadAcksInPlace } from '../../src/net/shaping.js';
import { bulk, startBulkServer } from '../helpers/trafficBulkLab.js';

/**
 * The speed limits' kernel parts on a real link (src/net/shaping.ts): a veth between a farm and a
 * carrier namespace, IPv4 and IPv6. What the ingress redirects to the ifb is read from the mirred
 * action's own counters: a download goes through it, the pure ACKs of an upload do not. On the
 * egress, HTB's own counters: a download's ACKs go direct, an upload's segments through the limit.
 */

const name = `mfsh${randomBytes(2).toString('hex')}`;
const farm = `${name}-farm`;
const carrier = `${name}-car`;
const LINK = 'shl0';
const IFB = 'mfifb9';
const PORT = 24_201;
const SERVERS = { v4: '10.232.0.1', v6: 'fd00:232::1' } as const;
let servers: { stop(): Promise<void> }[] = [];

/** What `tc ARGS` prints in the farm namespace. */
async function tcInFarm(...args: string[]): Promise<string> {
  return (await execa('ip', ['netns', 'exec', farm, 'tc', ...args])).stdout;
}

/** Bytes and packets the ingress redirected to the ifb so far. */
async function redirected(): Promise<{ bytes: number; packets: number }> {
  const shown = await tcInFarm('-s', 'filter', 'show', 'dev', LINK, 'parent', 'ffff:');
  const m = /Egress Redirect to device [^\n]*\n(?:[^\n]*\n)*?\s*Sent (\d+) bytes (\d+) pkt/.exec(shown);
  if (!m) throw new Error(`no redirect on ${LINK}: ${shown.slice(0, 300)}`);
  return { bytes: Number(m[1]), packets: Number(m[2]) };
}

/** Packets the link's HTB root sent direct (pure ACKs); bytes and packets its limited class sent. */
async function uploadQueues(): Promise<{ direct: number; limited: number; limitedPackets: number }> {
  const direct = /qdisc htb 1: root .*direct_packets_stat (\d+)/.exec(
    await tcInFarm('-s', 'qdisc', 'show', 'dev', LINK),
  );
  const limited = /class htb 1:1 [^\n]*\n\s*Sent (\d+) bytes (\d+) pkt/.exec(
    await tcInFarm('-s', 'class', 'show', 'dev', LINK),
  );
  if (!direct || !limited) throw new Error(`no HTB root on ${LINK}`);
  return { direct: Number(direct[1]), limited: Number(limited[1]), limitedPackets: Number(limited[2]) };
}

beforeAll(async () => {
  for (const ns of [farm, carrier]) await ip(['netns', 'add', ns]);
  await ipBatch([`link add ${LINK} netns ${farm} type veth peer name shc0 netns ${carrier}`]);
  await ipBatch(
    [
      'link set lo up',
      `addr add ${SERVERS.v4}/30 dev shc0`,
      `addr add ${SERVERS.v6}/64 dev shc0 nodad`,
      'link set shc0 up',
    ],
    { netns: carrier },
  );
  await ipBatch(
    [
      'link set lo up',
      `addr add 10.232.0.2/30 dev ${LINK}`,
      `addr add fd00:232::2/64 dev ${LINK} nodad`,
      `link set ${LINK} up`,
    ],
    { netns: farm },
  );
  servers = [
    await startBulkServer(carrier, SERVERS.v4, PORT),
    await startBulkServer(carrier, SERVERS.v6, PORT),
  ];
}, 60_000);

afterAll(async () => {
  for (const s of servers) await s.stop().catch(() => undefined);
  for (const ns of [farm, carrier]) await ip(['netns', 'del', ns]).catch(() => undefined);
});

describe('speed limits on a real link', () => {
  it("the download goes through the ifb, an upload's pure ACKs do not (IPv4 and IPv6); re-applying keeps it", async () => {
    await applyShaping(LINK, IFB, { downloadKbps: 10_000_000, uploadKbps: 10_000_000 }, { netns: farm });
    expect(await readShaping(LINK, IFB, { netns: farm })).toEqual({
      downloadKbps: 10_000_000,
      uploadKbps: 10_000_000,
    });
    for (const [family, host] of Object.entries(SERVERS)) {
      const target = { host, port: PORT };
      const start = await redirected();
      const up = await bulk(farm, { kind: 'direct', ...target }, target, 8_000_000, 0);
      expect(up.error, family).toBeNull();
      const afterUp = await redirected();
      // the upload's ACKs (thousands) pass; what is redirected is what carries payload or is no TCP
      // (here: nothing, or a stray neighbour discovery packet)
      expect(afterUp.packets - start.packets, family).toBeLessThan(10);
      const down = await bulk(farm, { kind: 'direct', ...target }, target, 0, 8_000_000);
      expect(down.complete, family).toBe(true);
      const afterDown = await redirected();
      // every segment of the download went through the ifb (headers included: more than the payload)
      expect(afterDown.bytes - afterUp.bytes, family).toBeGreaterThan(8_000_000);
      // a segment of a few bytes (no pure ACK, though short) is redirected too
      const small = await bulk(farm, { kind: 'direct', ...target }, target, 0, 5);
      expect(small.complete, family).toBe(true);
      expect((await redirected()).packets - afterDown.packets, family).toBeGreaterThanOrEqual(1);
    }
    // the link's egress: a download's ACKs go to the HTB root's direct queue, an upload's segments
    // through the limited class
    for (const [family, host] of Object.entries(SERVERS)) {
      const target = { host, port: PORT };
      const start = await uploadQueues();
      const down = await bulk(farm, { kind: 'direct', ...target }, target, 0, 8_000_000);
      expect(down.complete, family).toBe(true);
      const afterDown = await uploadQueues();
      // the ACK stream went direct (tens of ACKs here: the veth's receive side coalesces segments)
      expect(afterDown.direct - start.direct, family).toBeGreaterThanOrEqual(20);
      // through the class: what carries payload or opens and closes (SYN, the request, FIN)
      expect(afterDown.limitedPackets - start.limitedPackets, family).toBeLessThanOrEqual(8);
      const up = await bulk(farm, { kind: 'direct', ...target }, target, 4_000_000, 0);
      expect(up.error, family).toBeNull();
      expect((await uploadQueues()).limited - afterDown.limited, family).toBeGreaterThan(4_000_000);
    }
    // a change of rate keeps the ingress as it is (its counters go on)
    const before = await redirected();
    const directBefore = (await uploadQueues()).direct;
    await applyShaping(LINK, IFB, { downloadKbps: 8_000, uploadKbps: 4_000 }, { netns: farm });
    expect(await readShaping(LINK, IFB, { netns: farm })).toEqual({ downloadKbps: 8_000, uploadKbps: 4_000 });
    // (rebuilt, its counters would start again from zero; a stray neighbour discovery may add one)
    expect((await redirected()).packets).toBeGreaterThanOrEqual(before.packets);
    // and the root with its ACK filters (the counter goes on: the same qdisc)
    expect((await uploadQueues()).direct).toBeGreaterThanOrEqual(directBefore);
    expect(uploadAcksInPlace(await tcInFarm('filter', 'show', 'dev', LINK, 'parent', '1:'))).toBe(true);
    // a root of the version before (no ACK filters) gets them at the next apply
    await tcInFarm('filter', 'del', 'dev', LINK, 'parent', '1:');
    await applyShaping(LINK, IFB, { downloadKbps: 8_000, uploadKbps: 4_000 }, { netns: farm });
    expect(uploadAcksInPlace(await tcInFarm('filter', 'show', 'dev', LINK, 'parent', '1:'))).toBe(true);
    await removeShaping(LINK, IFB, { netns: farm });
    expect(await readShaping(LINK, IFB, { netns: farm })).toEqual({ downloadKbps: null, uploadKbps: null });
  }, 90_000);
});
