import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { AtTransport } from '../../src/at/atTransport.js';
import { Ec25Driver } from '../../src/ec25/driver.js';
import type { SimFaults } from '../../src/sim/ec25Model.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimModem } from '../../src/sim/simModem.js';

let dir: string;
const cleanup: (() => Promise<void>)[] = [];
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-drv-'));
});
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c();
  await rm(dir, { recursive: true, force: true });
});

async function driverFor(
  faults: Partial<SimFaults> = {},
  seed = 1,
): Promise<{ driver: Ec25Driver; sim: SimModem }> {
  const [profile] = defaultProfiles(1, seed);
  if (!profile) throw new Error('no profile');
  Object.assign(profile.faults, faults);
  profile.timings.bootMs = 10;
  profile.timings.attachMs = 200;
  const sim = new SimModem({ profile, dir, name: `ttyUSB${seed}` });
  await sim.start();
  cleanup.push(() => sim.stop());
  const at = new AtTransport({ path: sim.atPort });
  await at.start();
  cleanup.push(() => at.stop());
  const driver = new Ec25Driver(at);
  await driver.probe();
  await driver.configure();
  return { driver, sim };
}

it('reads identity, SIM, registration, signal, and brings up a QMI-mode data call over a real PTY', async () => {
  const { driver, sim } = await driverFor();
  expect(await driver.identity()).toEqual({
    manufacturer: 'Quectel',
    model: 'EC25',
    firmware: 'EC25EFAR06A11M4G',
    imei: sim.imei,
  });
  expect(await driver.imei()).toBe(sim.imei);
  expect(await driver.iccid()).toBe(sim.model.profile.iccid);
  expect(await driver.imsi()).toBe(sim.model.profile.imsi);
  expect(await driver.simState()).toBe('ready');
  expect(await driver.usbnet()).toBe(0);
  await new Promise((r) => setTimeout(r, 250));
  expect(await driver.registrations()).toEqual({ cs: 'home', ps: 'home', eps: 'home' });
  expect(await driver.operator()).toEqual({ name: sim.model.profile.operator, technology: 'LTE' });
  const signal = await driver.signal();
  expect(signal.technology).toBe('LTE');
  expect(signal.sinrDb).toBeGreaterThanOrEqual(-20);
  expect(signal.sinrDb).toBeLessThanOrEqual(30);
  expect((await driver.servingCell()).mcc).toBe(sim.model.profile.mcc);
  await driver.setApn('internet');
  expect(await driver.apn()).toBe('internet');
  // attached: the default bearer has its address before the host starts any call
  const bearer = await driver.address();
  expect(bearer).toMatch(/^10\.\d+\.\d+\.\d+$/);
  expect(await driver.dataCallUp()).toBe(false);
  await driver.startDataCall();
  expect(await driver.dataCallUp()).toBe(true);
  const settings = await driver.contextSettings();
  expect(settings).toMatchObject({ address: bearer });
  expect(settings?.dns.length).toBeGreaterThan(0);
  // rotation: the call ends, detach (no address), reattach, new call, new address
  await driver.stopDataCall();
  expect(await driver.dataCallUp()).toBe(false);
  await driver.setFunctionality(0);
  expect(await driver.address()).toBeNull();
  await driver.setFunctionality(1);
  await new Promise((r) => setTimeout(r, 250));
  await driver.startDataCall();
  expect(await driver.address()).not.toBe(bearer);
  await expect(driver.setApn('bad apn"; AT+CFUN=0')).rejects.toMatchObject({ code: 'invalid_apn' });
});

it('maps SIM and registration faults to states', async () => {
  expect(await (await driverFor({ noSim: true }, 2)).driver.simState()).toBe('missing');
  expect(await (await driverFor({ pinLocked: true }, 3)).driver.simState()).toBe('pin');
  expect(await (await driverFor({ simFailure: true }, 6)).driver.simState()).toBe('failure');
  const denied = await driverFor({ registration: 'denied' }, 4);
  expect((await denied.driver.registrations()).eps).toBe('denied');
  // a data-only SIM: not registered for circuit-switched, registered on LTE
  const dataOnly = await driverFor({ cs: 0 }, 7);
  await new Promise((r) => setTimeout(r, 250));
  expect(await dataOnly.driver.registrations()).toMatchObject({ cs: 'idle', eps: 'home' });
  const refused = await driverFor({ dataCallRefused: true }, 5);
  await new Promise((r) => setTimeout(r, 250));
  await expect(refused.driver.startDataCall()).rejects.toMatchObject({ code: 'at_error' });
});
