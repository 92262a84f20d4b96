import { access, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AtTransport } from '../../src/at/atTransport.js';
import type { Urc } from '../../src/at/types.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import type { SimModemEvent } from '../../src/sim/simModem.js';
import { SimLab } from '../../src/sim/simLab.js';
import { until } from '../helpers/until.js';

/**
 * A simulated EC25 on a real PTY, spoken to in AT as the new driver speaks: registration URCs per
 * domain, the host call and its events, +CGEV, a usbnet change that takes effect with the reset
 * (and re-lays the lab's USB interfaces).
 */

let dir: string;
let lab: SimLab;
const transports: AtTransport[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-simmodem-'));
});
afterEach(async () => {
  await Promise.all(transports.map((t) => t.stop()));
  transports.length = 0;
  await lab.stop();
  await rm(dir, { recursive: true, force: true });
});

async function start(faults = {}): Promise<{ at: AtTransport; urcs: Urc[]; events: SimModemEvent[] }> {
  const profiles = defaultProfiles(1, 31).map((p) => ({
    ...p,
    timings: { bootMs: 30, latencyMs: 1, attachMs: 150, resetMs: 100, callMs: 30, cfunMs: 10 },
    faults: { ...p.faults, ...faults },
  }));
  lab = new SimLab({ dir: join(dir, 'lab'), profiles });
  const events: SimModemEvent[] = [];
  lab.modem(0).onEvent((e) => events.push(e));
  await lab.start();
  const urcs: Urc[] = [];
  const at = new AtTransport({ path: lab.modem(0).atPort, onUrc: (u) => urcs.push(u), presencePollMs: 50 });
  transports.push(at);
  await at.start();
  await until(async () => (await at.send('AT').catch(() => null)) !== null, { timeoutMs: 10_000 });
  return { at, urcs, events };
}

describe('simulated EC25 over a PTY', () => {
  it('configures like the driver; CS, PS and EPS report apart; the host call and its events', async () => {
    const { at, urcs, events } = await start({ cs: 0 });
    for (const c of ['ATE0', 'AT+CMEE=1', 'AT+CREG=2', 'AT+CGREG=2', 'AT+CEREG=2', 'AT+CGEREP=2,1'])
      expect((await at.send(c)).lines).toEqual([]);
    expect((await at.send('AT+QCFG="usbnet"')).lines).toEqual(['+QCFG: "usbnet",0']);
    expect((await at.send('AT+CGDCONT=1,"IP","lab.apn"')).lines).toEqual([]);
    await until(() => urcs.some((u) => u.line.startsWith('+CEREG: 1,')), { timeoutMs: 10_000 });
    expect(urcs.map((u) => u.line)).toContainEqual(
      expect.stringMatching(/^\+CGREG: 1,"[0-9A-F]+","[0-9A-F]+",7$/),
    );
    expect(urcs.map((u) => u.line).filter((l) => l.startsWith('+CREG:'))).toEqual([]);
    expect((await at.send('AT+CREG?')).lines).toEqual(['+CREG: 2,0']);
    const addr = (await at.send('AT+CGPADDR=1')).lines[0];
    expect(addr).toMatch(/^\+CGPADDR: 1,"10\.\d+\.\d+\.\d+"$/);
    expect((await at.send('AT+CGCONTRDP=1')).lines[0]).toMatch(/^\+CGCONTRDP: 1,5,"lab\.apn","10\./);

    expect((await at.send('AT$QCRMCALL?')).lines).toEqual([]);
    expect((await at.send('AT$QCRMCALL=1,1')).lines).toEqual(['$QCRMCALL: 1,V4']);
    expect(lab.modem(0).hostCall).toBe(true);
    lab.modem(0).dropCall();
    await until(() => urcs.some((u) => u.line === '+CGEV: NW PDN DEACT 1'), { timeoutMs: 10_000 });
    expect(lab.modem(0).hostCall).toBe(false);
    expect((await at.send('AT$QCRMCALL=1,1')).lines).toEqual(['$QCRMCALL: 1,V4']);
    expect((await at.send('AT+CGPADDR=1')).lines[0]).toBe(addr);
    lab.modem(0).detachNetwork();
    await until(() => urcs.some((u) => u.line === '+CGEV: NW DETACH'), { timeoutMs: 10_000 });
    await until(() => urcs.some((u) => u.line === '+CEREG: 2'), { timeoutMs: 10_000 });
    expect(events.filter((e) => e.type === 'hostCall')).toEqual([
      { type: 'hostCall', up: true },
      { type: 'hostCall', up: false },
      { type: 'hostCall', up: true },
      { type: 'hostCall', up: false },
    ]);
    await until(async () => (await at.send('AT+CEREG?')).lines[0]?.startsWith('+CEREG: 2,1,'), {
      timeoutMs: 10_000,
    });
  });

  it('AT+QCFG="usbnet",1 takes effect with the reset: ECM layout, QCRMCALL refused, QNETDEVCTL dials', async () => {
    const started = await start();
    const { events } = started;
    let at = started.at;
    await at.send('ATE0');
    expect((await at.send('AT+QCFG="usbnet",1')).lines).toEqual([]);
    expect((await at.send('AT+QCFG="usbnet"')).lines).toEqual(['+QCFG: "usbnet",0']);
    const wwan = join(lab.sysfs.root, 'bus', 'usb', 'devices', '1-1.1', '1-1.1:1.4', 'net', 'wwan0');
    await access(wwan);
    await at.send('AT+CFUN=1,1');
    await until(() => events.filter((e) => e.type === 'plugged').length === 2, { timeoutMs: 10_000 });
    await until(
      () =>
        access(join(lab.sysfs.root, 'bus', 'usb', 'devices', '1-1.1', '1-1.1:1.4', 'net', 'usb0')).then(
          () => true,
          () => false,
        ),
      { timeoutMs: 10_000 },
    );
    await expect(access(wwan)).rejects.toThrow();
    // the old port is gone with the USB device: open the new one
    await at.stop();
    at = new AtTransport({ path: lab.modem(0).atPort, presencePollMs: 50 });
    transports.push(at);
    await at.start();
    await until(async () => (await at.send('AT').catch(() => null)) !== null, { timeoutMs: 10_000 });
    await at.send('ATE0');
    expect((await at.send('AT+QCFG="usbnet"')).lines).toEqual(['+QCFG: "usbnet",1']);
    await until(async () => (await at.send('AT+CEREG?')).lines[0] === '+CEREG: 0,1', { timeoutMs: 10_000 });
    await expect(at.send('AT$QCRMCALL=1,1')).rejects.toThrow();
    expect((await at.send('AT+QNETDEVCTL=1,1,1')).lines).toEqual([]);
    expect(lab.modem(0).hostCall).toBe(true);
  });
});
