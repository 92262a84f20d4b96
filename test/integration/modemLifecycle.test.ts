import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CommandResult, ModemConfig } from '../../machines/modemTypes.js';
import { ModemRuntime, type ModemSnapshot } from '../../src/fleet/modemRuntime.js';
import type { SimFaults } from '../../src/sim/ec25Model.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimModem } from '../../src/sim/simModem.js';
import { stateString } from '../helpers/fakeModem.js';
import { until } from '../helpers/until.js';

/** Simulator + AT transport + EC25 driver + modem machine, over real PTYs. */

const CONFIG: Partial<ModemConfig> = {
  probeAttempts: 3,
  probeRetryMs: 100,
  simRetries: 2,
  simRetryMs: 100,
  registrationPollMs: 100,
  registrationTimeoutMs: 800,
  signalPollMs: 200,
  detachMs: 100,
  rotationAttempts: 2,
  backoffBaseMs: 50,
  backoffCapMs: 200,
  reenumerationMs: 2_000,
  maxRecoveries: 10,
  recoveryWindowMs: 60_000,
};

let dir: string;
let sims: SimModem[] = [];
let runtimes: ModemRuntime[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-life-'));
});
afterEach(async () => {
  await Promise.all(runtimes.map((r) => r.stop()));
  await Promise.all(sims.map((s) => s.stop()));
  runtimes = [];
  sims = [];
  await rm(dir, { recursive: true, force: true });
  const left = await execa('pgrep', ['-f', `socat.*${dir}`], { reject: false });
  expect(left.stdout).toBe('');
});

async function sim(faults: Partial<SimFaults> = {}): Promise<SimModem> {
  const [profile] = defaultProfiles(1, sims.length + 11);
  if (!profile) throw new Error('no profile');
  Object.assign(profile.faults, faults);
  profile.timings = { bootMs: 50, latencyMs: 2, attachMs: 150, resetMs: 300 };
  const s = new SimModem({ profile, dir, name: `ttyUSB${2 + 4 * sims.length}` });
  sims.push(s);
  await s.start();
  return s;
}

function run(s: SimModem, results: CommandResult[] = [], config: Partial<ModemConfig> = {}): ModemRuntime {
  const rt = new ModemRuntime({
    usbPath: `1-1.${sims.indexOf(s) + 1}`,
    atPort: s.atPort,
    config: { ...CONFIG, ...config },
    presencePollMs: 100,
    timeouts: { probe: 300, query: 1_000, cfun: 1_000 },
    maxConsecutiveTimeouts: 5,
    addressPollMs: 50,
    output: (o) => o.type === 'commandFinished' && results.push(o.result),
  });
  runtimes.push(rt);
  rt.start();
  return rt;
}

const stateOf = (rt: ModemRuntime): string => stateString(rt.snapshot().value);

/** Until the runtime's snapshot passes `check`; a timeout names the state it is in. */
const reach = (rt: ModemRuntime, check: (s: ModemSnapshot) => boolean, timeoutMs = 8_000): Promise<true> =>
  until(() => check(rt.snapshot()), {
    timeoutMs,
    intervalMs: 20,
    message: () => `${check.toString()} (in ${stateOf(rt)}, reason ${rt.snapshot().context.reason ?? '-'})`,
  });

const online = (s: ModemSnapshot): boolean => s.matches('online');

describe('modem lifecycle over real PTYs', () => {
  it('boots to online with identity, registration and the address of the data call', async () => {
    const s = await sim();
    const rt = run(s);
    await reach(rt, online);
    const ctx = rt.snapshot().context;
    expect(ctx.identity).toMatchObject({
      imei: s.imei,
      iccid: s.model.profile.iccid,
      imsi: s.model.profile.imsi,
      model: 'EC25',
      firmware: s.model.profile.firmware,
    });
    expect(ctx.registration).toBe('home');
    expect(ctx.operator).toBe(s.model.profile.operator);
    expect(ctx.wanIp).toBe(s.model.address);
    expect(s.model.echo).toBe(false);
    await reach(rt, (x) => x.context.signal !== null); // the signal poll ran
    expect(ctx.reason).toBeNull();
  });

  it.each([
    [{ noSim: true }, 'sim_missing'],
    [{ pinLocked: true }, 'sim_locked'],
    [{ registration: 'denied' as const }, 'registration_denied'],
  ])('fault %o ends in error with reason %s', async (faults, reason) => {
    const rt = run(await sim(faults));
    await reach(rt, (x) => x.matches('error'));
    expect(rt.snapshot().context.reason).toBe(reason);
  });

  it.each([
    [{ registration: 'searching' as const }, 'no_service'],
    [{ dataCallRefused: true }, 'data_call_failed'],
    [{ hang: true }, 'at_timeout'],
  ])(
    'fault %o climbs the recovery ladder, then error with reason %s',
    async (faults, reason) => {
      const s = await sim(faults);
      const rt = run(s);
      await reach(rt, (x) => x.matches('error'), 25_000);
      expect(rt.snapshot().context.reason).toBe(reason);
      // the ladder went as far as AT+CFUN=1,1 (the simulator re-enumerated), except on a hung modem
      if (!('hang' in faults)) expect(s.enumerations).toBeGreaterThanOrEqual(2);
    },
    30_000,
  );

  it('a fault that clears is recovered without a human', async () => {
    const s = await sim({ dataCallRefused: true });
    const rt = run(s);
    await reach(rt, (x) => x.matches('recovering'));
    s.setFaults({ dataCallRefused: false });
    await reach(rt, online);
    expect(rt.snapshot().context.wanIp).toBe(s.model.address);
  });

  it('unplug in the middle of a command reaches removed within 2 s, without CPU spin', async () => {
    const s = await sim();
    const rt = run(s);
    await reach(rt, online);
    s.setFaults({ slowMs: 5_000 });
    await reach(rt, (x) => x.matches({ online: 'polling' }));
    const at = Date.now();
    await s.unplug();
    await reach(rt, (x) => x.status === 'done', 2_000);
    expect(stateOf(rt)).toBe('removed');
    expect(Date.now() - at).toBeLessThan(2_000);
    const cpu = process.cpuUsage();
    const wall = Date.now();
    await new Promise((r) => setTimeout(r, 1_000));
    const used = process.cpuUsage(cpu);
    expect((used.user + used.system) / 1000 / (Date.now() - wall)).toBeLessThan(0.5);
  });

  it('reset: AT+CFUN=1,1, re-enumeration, back online with the same IMEI', async () => {
    const s = await sim();
    const results: CommandResult[] = [];
    const rt = run(s, results);
    await reach(rt, online);
    rt.send({ type: 'command.reset', id: 7 });
    await reach(rt, (x) => x.matches('resetting'));
    await reach(rt, online);
    expect(s.enumerations).toBe(2);
    expect(rt.snapshot().context.identity?.imei).toBe(s.imei);
    expect(results).toEqual([{ id: 7, kind: 'reset', ok: true, result: {} }]);
  });

  it('rotation: detach, reattach, a new address verified through the port', async () => {
    const s = await sim();
    const results: CommandResult[] = [];
    const rt = run(s, results);
    await reach(rt, online);
    const before = rt.snapshot().context.wanIp;
    rt.send({ type: 'command.rotate', id: 3 });
    await reach(rt, () => results.length === 1);
    const after = rt.snapshot().context.wanIp;
    expect(after).not.toBe(before);
    expect(after).toBe(s.model.address);
    expect(results[0]).toMatchObject({ id: 3, ok: true, result: { previousIp: before, wanIp: after } });
    expect(stateOf(rt)).toMatch(/^online\./);
  });

  it('rotation that keeps the address: rotation_failed reported, the modem stays online', async () => {
    const s = await sim({ sameAddress: 1 });
    const results: CommandResult[] = [];
    const rt = run(s, results);
    await reach(rt, online);
    rt.send({ type: 'command.rotate', id: 4 });
    await reach(rt, () => results.length === 1);
    expect(results[0]).toMatchObject({ id: 4, ok: false, result: { error: 'rotation_failed', attempts: 2 } });
    expect(stateOf(rt)).toMatch(/^online\./);
  });

  it('disable puts the radio in CFUN=4; enable brings it back online', async () => {
    const s = await sim();
    const results: CommandResult[] = [];
    const rt = run(s, results);
    await reach(rt, online);
    rt.send({ type: 'command.disable', id: 5 });
    await reach(rt, (x) => x.matches('disabled'));
    expect(s.model.cfun).toBe(4);
    rt.send({ type: 'command.enable', id: 6 });
    await reach(rt, online);
    expect(s.model.cfun).toBe(1);
    expect(results.map((r) => [r.id, r.ok])).toEqual([
      [5, true],
      [6, true],
    ]);
  });
});
