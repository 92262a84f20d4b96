import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AtTransport } from '../../src/at/atTransport.js';
import type { Urc } from '../../src/at/types.js';
import { ip, ipJson } from '../../src/net/ip.js';
import { readTable } from '../../src/net/nft.js';
import { GATE_TABLE, LabWwan } from '../../src/sim/lab/labWwan.js';
import { ECHO_ADDRESS, ECHO_PORT, NetLab } from '../../src/sim/lab/netLab.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { until } from '../helpers/until.js';

/**
 * The lab's stand-in for qmi_wwan, as root in network namespaces, with a simulated EC25 on a PTY
 * spoken to in AT: the link passes traffic only with raw_ip Y (written while the link is down) AND
 * the host's call up (`AT$QCRMCALL=1,1`); `+CGPADDR` shows an address either way; a re-plug loses
 * raw_ip and closes the link again.
 */

let net: NetLab;
let lab: SimLab;
let wwan: LabWwan;
let dir: string;
let at: AtTransport;
const urcs: Urc[] = [];

async function openAt(): Promise<AtTransport> {
  const t = new AtTransport({ path: lab.modem(0).atPort, onUrc: (u) => urcs.push(u), presencePollMs: 100 });
  await t.start();
  await until(async () => (await t.send('AT+CPIN?').catch(() => null))?.lines[0] === '+CPIN: READY', {
    timeoutMs: 5_000,
  });
  await t.send('ATE0');
  await t.send('AT+CGEREP=2,1');
  return t;
}

/** The bearer's address once attached (no call needed). */
async function bearer(): Promise<string> {
  return until(
    async () => {
      const line = (await at.send('AT+CGPADDR=1')).lines[0] ?? '';
      const m = /^\+CGPADDR: 1,"(.+)"$/.exec(line);
      return m?.[1] !== '0.0.0.0' && m?.[1];
    },
    { timeoutMs: 5_000, message: 'an attach' },
  );
}

/** Host side as a driver would leave it: the address on the link and a route to the echo server. */
async function route(address: string): Promise<void> {
  await ip(['addr', 'replace', `${address}/24`, 'dev', 'wwan0'], { netns: net.farm });
  await ip(['route', 'replace', `${ECHO_ADDRESS}/32`, 'via', `${net.subnet(0)}.1`, 'dev', 'wwan0'], {
    netns: net.farm,
  });
}

/** What the echo server says through wwan0 from `address`, or null when nothing gets through. */
async function echo(address: string): Promise<string | null> {
  const r = await net.inFarm([
    'curl',
    '-s',
    '--max-time',
    '1.5',
    '--interface',
    address,
    `http://${ECHO_ADDRESS}:${ECHO_PORT}/`,
  ]);
  return r.exitCode === 0 ? r.stdout.trim() : null;
}

beforeAll(async () => {
  net = new NetLab({ name: `mfw${randomBytes(2).toString('hex')}`, modems: 1 });
  await net.start();
  dir = await mkdtemp(join(tmpdir(), 'mf-wwan-'));
  const profiles = defaultProfiles(1, 21).map((p) => ({
    ...p,
    subnet: net.subnet(0),
    timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 100, callMs: 50, cfunMs: 10 },
  }));
  lab = new SimLab({ dir: join(dir, 'lab'), profiles });
  await lab.start();
  wwan = new LabWwan(net, lab);
  await wwan.start();
  at = await openAt();
}, 60_000);

afterAll(async () => {
  await at?.stop();
  await wwan?.stop();
  await lab?.stop();
  await net?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe('LabWwan: the kernel side of a qmi_wwan link in the lab', () => {
  it('traffic flows only with raw_ip Y and the host call up; a re-plug closes the link', async () => {
    const address = await bearer();
    expect(address.startsWith(`${net.subnet(0)}.`)).toBe(true);
    await route(address);
    // attached, +CGPADDR shows the address, the link is up: nothing passes
    expect(await wwan.rawIp('wwan0')).toBe(false);
    expect(await echo(address)).toBeNull();

    // the kernel refuses raw_ip on a running link
    await expect(wwan.setRawIp('wwan0', true)).rejects.toMatchObject({ code: 'link_busy' });
    await wwan.setLink('wwan0', false);
    await wwan.setRawIp('wwan0', true);
    expect(await wwan.rawIp('wwan0')).toBe(true);
    await wwan.setLink('wwan0', true);
    await wwan.setMtu('wwan0', 1_430);
    const [link] = await ipJson<{ mtu: number; flags: string[] }>(['link', 'show', 'dev', 'wwan0'], {
      netns: net.farm,
    });
    expect(link?.mtu).toBe(1_430);
    expect(link?.flags).toContain('UP');
    await route(address); // a link going down takes its routes
    expect(await echo(address)).toBeNull(); // raw_ip alone is not enough: no call

    // the host's call: now traffic flows, from the bearer's address
    expect((await at.send('AT$QCRMCALL=1,1')).lines).toEqual(['$QCRMCALL: 1,V4']);
    expect((await at.send('AT$QCRMCALL?')).lines).toEqual(['$QCRMCALL: 1,V4']);
    await wwan.settled();
    expect(wwan.passes(0)).toBe(true);
    expect(await echo(address)).toBe(address);

    // the network drops the PDN: closed, +CGEV; still attached; a redial opens it again
    lab.modem(0).dropCall();
    await until(() => urcs.some((u) => u.line === '+CGEV: NW PDN DEACT 1'), { timeoutMs: 3_000 });
    await wwan.settled();
    expect(await echo(address)).toBeNull();
    expect((await at.send('AT+CGPADDR=1')).lines).toEqual([`+CGPADDR: 1,"${address}"`]);
    await at.send('AT$QCRMCALL=1,1');
    await wwan.settled();
    expect(await echo(address)).toBe(address);

    // stopping the call closes it
    await at.send('AT$QCRMCALL=0,1');
    await wwan.settled();
    expect(await echo(address)).toBeNull();
    await at.send('AT$QCRMCALL=1,1');
    await wwan.settled();
    expect(await echo(address)).toBe(address);

    // a re-plug: raw_ip back to N, the call gone; a new call alone does not open the link
    await at.stop();
    await lab.unplug(0);
    await lab.plug(0);
    urcs.length = 0;
    at = await openAt();
    await wwan.settled();
    expect(await wwan.rawIp('wwan0')).toBe(false);
    const again = await bearer();
    await at.send('AT$QCRMCALL=1,1');
    await route(again);
    await wwan.settled();
    expect(lab.modem(0).hostCall).toBe(true);
    expect(await echo(again)).toBeNull();
    await wwan.setLink('wwan0', false);
    await wwan.setRawIp('wwan0', true);
    await wwan.setLink('wwan0', true);
    await route(again);
    expect(await echo(again)).toBe(again);

    // AT+CFUN=0 detaches: the call and the traffic are gone
    await at.send('AT+CFUN=0');
    await wwan.settled();
    expect(await echo(again)).toBeNull();
    await at.send('AT+CFUN=1');
    const table = await readTable('inet', GATE_TABLE, { netns: net.carrier });
    expect(table?.rules.map((r) => r.comment)).toEqual(['closed', 'closed']);
  }, 60_000);

  it('lab faults: a kernel without raw_ip, and a raw_ip that does not stick', async () => {
    await wwan.setLink('wwan0', false);
    wwan.setFaults(0, { rawIpUnsupported: true });
    expect(await wwan.rawIp('wwan0')).toBeNull();
    await expect(wwan.setRawIp('wwan0', true)).rejects.toMatchObject({ code: 'raw_ip_unsupported' });
    wwan.setFaults(0, { rawIpUnsupported: false, rawIpStuck: true });
    await wwan.setRawIp('wwan0', false);
    await wwan.setRawIp('wwan0', true);
    expect(await wwan.rawIp('wwan0')).toBe(false);
    wwan.setFaults(0, { rawIpStuck: false });
    expect(await wwan.rawIp('wwan9')).toBeNull();
    await expect(wwan.setRawIp('wwan0;x', true)).rejects.toMatchObject({ code: 'invalid_iface' });
    await expect(wwan.setMtu('wwan0', 100)).rejects.toMatchObject({ code: 'invalid_mtu' });
  });
});
