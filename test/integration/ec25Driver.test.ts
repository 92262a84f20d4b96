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

it('reads identity, SIM, registration, signal, and brings up a data call over a real PTY', async () => {
  const { driver, sim } = await driverFor();
  expect(await driver.identity()).toEqual({
    manufacturer: 'Quectel',
    model: 'EC25',
    firmware: 'EC25EFAR06A11M4G',
    imei: sim.imei,
  });
  expect(await driver.iccid()).toBe(sim.model.profile.iccid);
  expect(await driver.imsi()).toBe(sim.model.profile.imsi);
  expect(await driver.simState()).toBe('ready');
  await new Promise((r) => setTimeout(r, 250));
  expect(await driver.registration()).toBe('home');
  expect(await driver.operator()).toEqual({ name: sim.model.profile.operator, technology: 'LTE' });
  expect((await driver.signal()).technology).toBe('LTE');
  expect((await driver.servingCell()).mcc).toBe(sim.model.profile.mcc);
  await driver.setApn('internet');
  expect(await driver.address()).toBeNull();
  await driver.startDataCall();
  const first = await driver.address();
  expect(first).toMatch(/^10\.\d+\.\d+\.\d+$/);
  // rotation: detach, reattach, new call, new address
  await driver.setFunctionality(0);
  await driver.setFunctionality(1);
  await new Promise((r) => setTimeout(r, 250));
  await driver.startDataCall();
  expect(await driver.address()).not.toBe(first);
  await expect(driver.setApn('bad apn"; AT+CFUN=0')).rejects.toMatchObject({ code: 'invalid_apn' });
});

it('maps SIM faults to states', async () => {
  expect(await (await driverFor({ noSim: true }, 2)).driver.simState()).toBe('missing');
  expect(await (await driverFor({ pinLocked: true }, 3)).driver.simState()).toBe('pin');
  const denied = await driverFor({ registration: 'denied' }, 4);
  expect(await denied.driver.registration()).toBe('denied');
  const refused = await driverFor({ dataCallRefused: true }, 5);
  await expect(refused.driver.startDataCall()).rejects.toMatchObject({ code: 'at_error' });
});
