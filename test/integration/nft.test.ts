import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ipBatch } from '../../src/net/ip.js';
import { applyTable, deleteTable, readTable } from '../../src/net/nft.js';
import type { NftTable } from '../../src/net/nftRuleset.js';
import { ECHO_ADDRESS, ECHO_PORT, NetLab } from '../../src/sim/lab/netLab.js';

/**
 * nftables for real, in the lab's namespace pair: the carrier namespace SNATs the modems' private
 * addresses to a pool of public addresses (what the lab's carrier NAT will do), read back with its
 * counters; re-applying is idempotent, a bad value or a ruleset the kernel refuses changes nothing,
 * deleting is idempotent.
 */

const root = process.getuid?.() === 0;
const POOL = ['198.51.100.1', '198.51.100.2'];
const client = (i: number): string => `100.65.${i + 1}.2`;

let lab: NetLab;

/** What the echo server in the carrier namespace sees of a request from the modem address. */
async function seenFrom(address: string): Promise<string> {
  const script = `require('http').get({ host: '${ECHO_ADDRESS}', port: ${ECHO_PORT}, localAddress: '${address}', timeout: 3000 }, (r) => { let b = ''; r.on('data', (d) => (b += d)); r.on('end', () => process.stdout.write(b)); }).on('error', (e) => { process.stderr.write(e.message); process.exit(1); });`;
  const r = await lab.inFarm([process.execPath, '-e', script]);
  if (!r.ok) throw new Error(`request from ${address} failed: ${r.stderr}`);
  return r.stdout.trim();
}

const carrierNat = (pool: string[]): NftTable => ({
  family: 'ip',
  name: 'mf_carrier',
  counters: ['nat_all'],
  chains: [
    {
      // the echo server lives in the carrier namespace itself: its traffic is NATed on input
      name: 'in_nat',
      base: { type: 'nat', hook: 'input', priority: 100 },
      rules: [
        {
          match: [{ match: 'saddr', family: 'ip', value: '100.65.0.0/16' }],
          then: [
            { do: 'counter', name: 'nat_all' },
            { do: 'snatPool', family: 'ip', pool },
          ],
          comment: 'carrier nat',
        },
      ],
    },
    {
      name: 'post_nat',
      base: { type: 'nat', hook: 'postrouting', priority: 'srcnat' },
      rules: [
        { match: [{ match: 'oifname', value: 'mgmtc' }], then: [{ do: 'counter' }, { do: 'masquerade' }] },
      ],
    },
  ],
});

describe.runIf(root)('nftables in a namespace pair', () => {
  beforeAll(async () => {
    lab = new NetLab({ name: `mfn${randomBytes(2).toString('hex')}`, modems: 2 });
    await lab.start();
    // each modem address routes out through its own link (a table and a rule per modem)
    await ipBatch(
      [0, 1].flatMap((i) => [
        `addr add ${client(i)}/24 dev ${lab.iface(i)}`,
        `route replace default via 100.65.${i + 1}.1 dev ${lab.iface(i)} table ${20_001 + i}`,
        `rule add priority ${2_001 + i} from ${client(i)} lookup ${20_001 + i}`,
      ]),
      { netns: lab.farm },
    );
    // the echo server answers the public address: its answer is routed before the output hook
    // translates it back to the modem address, so the carrier needs a route to the pool (measured:
    // without one the answer is dropped as unroutable); a local route will do, no nat output chain
    await ipBatch(
      POOL.map((a) => `route add local ${a}/32 dev lo`),
      { netns: lab.carrier },
    );
  }, 60_000);
  afterAll(async () => {
    await lab?.stop();
  });

  it('without NAT the echo server sees the modem addresses; no table yet', async () => {
    expect(await seenFrom(client(0))).toBe(client(0));
    expect(await seenFrom(client(1))).toBe(client(1));
    expect(await readTable('ip', 'mf_carrier', { netns: lab.carrier })).toBeNull();
  });

  it('applies SNAT to a pool: each modem address sticks to one public address; counters count', async () => {
    await applyTable(carrierNat(POOL), { netns: lab.carrier });
    const first = [await seenFrom(client(0)), await seenFrom(client(1))];
    for (const seen of first) expect(POOL).toContain(seen);
    expect([await seenFrom(client(0)), await seenFrom(client(1))]).toEqual(first); // jhash: sticky

    const state = await readTable('ip', 'mf_carrier', { netns: lab.carrier });
    expect(state?.chains.map((c) => [c.name, c.type, c.hook])).toEqual([
      ['in_nat', 'nat', 'input'],
      ['post_nat', 'nat', 'postrouting'],
    ]);
    const rule = state?.rules.find((r) => r.comment === 'carrier nat');
    expect(rule).toMatchObject({ chain: 'in_nat', counterName: 'nat_all' });
    // NAT sees the first packet of each connection: four requests, four connections
    expect(state?.counters['nat_all']?.packets).toBe(4);
    expect(state?.rules.find((r) => r.chain === 'post_nat')?.counter).toEqual({ packets: 0, bytes: 0 });
  });

  it('re-applying is idempotent: the same chains and rules, once', async () => {
    const before = await readTable('ip', 'mf_carrier', { netns: lab.carrier });
    await applyTable(carrierNat(POOL), { netns: lab.carrier });
    await applyTable(carrierNat(POOL), { netns: lab.carrier });
    const after = await readTable('ip', 'mf_carrier', { netns: lab.carrier });
    expect(after?.rules.map((r) => [r.chain, r.comment])).toEqual(
      before?.rules.map((r) => [r.chain, r.comment]),
    );
    expect(after?.rules).toHaveLength(2);
    expect(after?.counters['nat_all']).toEqual({ packets: 0, bytes: 0 }); // a new table: counters start again
    expect(POOL).toContain(await seenFrom(client(0)));
  });

  it('a bad value is refused before nft runs, and the table stays as it was', async () => {
    const before = await readTable('ip', 'mf_carrier', { netns: lab.carrier });
    await expect(
      applyTable(carrierNat(['198.51.100.1', '10.0.0.1; flush ruleset']), { netns: lab.carrier }),
    ).rejects.toMatchObject({
      code: 'invalid_ruleset',
      message: expect.stringContaining('"10.0.0.1; flush ruleset" is not an IPv4 address') as unknown,
    });
    expect(await readTable('ip', 'mf_carrier', { netns: lab.carrier })).toEqual(before);
  });

  it('a ruleset the kernel refuses fails as a whole (nft_failed): the old table keeps working', async () => {
    const before = await readTable('ip', 'mf_carrier', { netns: lab.carrier });
    const refused: NftTable = {
      ...carrierNat(['198.51.100.7']),
      // the kernel refuses a nat chain before conntrack (priority at or below -200)
      chains: [
        { ...carrierNat([]).chains[1]!, base: { type: 'nat', hook: 'postrouting', priority: -300 } },
        carrierNat(['198.51.100.7']).chains[0]!,
      ],
    };
    await expect(applyTable(refused, { netns: lab.carrier })).rejects.toMatchObject({ code: 'nft_failed' });
    const after = await readTable('ip', 'mf_carrier', { netns: lab.carrier });
    expect(after?.rules.map((r) => r.handle)).toEqual(before?.rules.map((r) => r.handle));
    expect(POOL).toContain(await seenFrom(client(1)));
  });

  it('deletes the table (twice: no error); traffic is un-NATed again; a missing namespace is an error', async () => {
    await deleteTable('ip', 'mf_carrier', { netns: lab.carrier });
    await deleteTable('ip', 'mf_carrier', { netns: lab.carrier });
    expect(await readTable('ip', 'mf_carrier', { netns: lab.carrier })).toBeNull();
    expect(await seenFrom(client(0))).toBe(client(0));
    await expect(readTable('ip', 'mf_carrier', { netns: `${lab.carrier}-gone` })).rejects.toMatchObject({
      code: 'nft_failed',
    });
  });
});
