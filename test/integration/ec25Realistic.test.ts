import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { CommandResult, ModemConfig } from '../../machines/modemTypes.js';
import { ModemRuntime, type ModemSnapshot } from '../../src/fleet/modemRuntime.js';
import type { SimFaults } from '../../src/sim/ec25Model.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimModem } from '../../src/sim/simModem.js';
import { stateString } from '../helpers/fakeModem.js';
import { until } from '../helpers/until.js';

/**
 * The EC25 as it is in the field, over real PTYs: the `realistic` timing profile (boot and
 * re-enumeration ~10-20 s, attach 2-15 s, `AT+CFUN=0` up to ~5 s, a call 1-3 s) against the
 * default modem config (AT timeouts, polls and waits as production has them), through a whole
 * cycle; and the two registration domains.
 */

let dir: string;
const sims: SimModem[] = [];
const runtimes: ModemRuntime[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-real-'));
});
afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((r) => r.stop()));
  await Promise.all(sims.splice(0).map((s) => s.stop()));
  await rm(dir, { recursive: true, force: true });
});

async function sim(
  timing: 'fast' | 'realistic',
  faults: Partial<SimFaults> = {},
  seed = 71,
): Promise<SimModem> {
  const [profile] = defaultProfiles(1, seed, { timing });
  if (!profile) throw new Error('no profile');
  Object.assign(profile.faults, faults);
  const s = new SimModem({ profile, dir, name: `ttyUSB${2 + 4 * sims.length}` });
  sims.push(s);
  await s.start();
  return s;
}

function run(s: SimModem, config: Partial<ModemConfig>, results: CommandResult[]): ModemRuntime {
  const rt = new ModemRuntime({
    usbPath: `1-1.${sims.indexOf(s) + 1}`,
    atPort: s.atPort,
    config,
    presencePollMs: 200,
    output: (o) => o.type === 'commandFinished' && results.push(o.result),
  });
  runtimes.push(rt);
  rt.start();
  return rt;
}

const reach = (rt: ModemRuntime, what: string, check: (s: ModemSnapshot) => boolean, timeoutMs: number) =>
  until(() => check(rt.snapshot()), {
    timeoutMs,
    intervalMs: 50,
    message: () =>
      `${what} (in ${stateString(rt.snapshot().value)}, ${rt.snapshot().context.lastError ?? '-'})`,
  });

describe('a real EC25 cycle', () => {
  it('realistic timings: boot → online → rotate → call dropped → redialled → unplug', async () => {
    const s = await sim('realistic');
    const results: CommandResult[] = [];
    const states: string[] = [];
    // production's config, except a shorter signal poll (the call check rides on it) and hold time
    const rt = run(s, { signalPollMs: 3_000, detachMs: 2_000 }, results);
    rt.actor.subscribe((snap) => states.push(stateString(snap.value)));
    // boot: RDY after 6-12 s, SIM, attach 2-15 s, call 1-3 s
    await reach(rt, 'online', (x) => x.matches({ online: 'serving' }), 60_000);
    const first = rt.snapshot().context.wanIp;
    expect(first).toBe(s.model.address);
    expect(s.hostCall).toBe(true);

    // rotation: the call ends, CFUN=0 (up to 5 s), held 2 s, CFUN=1, attach, a new call
    rt.send({ type: 'command.rotate', id: 1 });
    await until(() => results.some((r) => r.id === 1), { timeoutMs: 60_000, message: 'rotation finished' });
    expect(results.find((r) => r.id === 1)).toMatchObject({ ok: true, result: { previousIp: first } });
    const rotated = rt.snapshot().context.wanIp;
    expect(rotated).not.toBe(first);

    // the network deactivates the PDN (+CGEV) while AT still answers: redialled, online throughout
    const before = states.length;
    s.dropCall();
    expect(s.hostCall).toBe(false);
    await reach(rt, 'redialled', (x) => x.matches({ online: 'serving' }) && s.hostCall, 30_000);
    expect(states.slice(before)).toContain('online.redialing');
    expect(states.slice(before).some((x) => !x.startsWith('online'))).toBe(false);

    // unplug
    await s.unplug();
    await reach(rt, 'removed', (x) => x.status === 'done', 10_000);
  }, 180_000);

  it('a data-only SIM (CREG 0, CEREG 1) comes online, and a circuit-switched flap leaves it online', async () => {
    const s = await sim('fast', { cs: 0 }, 72);
    const rt = run(
      s,
      { probeRetryMs: 100, registrationPollMs: 100, signalPollMs: 500, backoffBaseMs: 100 },
      [],
    );
    await reach(rt, 'online', (x) => x.matches({ online: 'serving' }), 15_000);
    expect(rt.snapshot().context.registration).toBe('home');
    const states: string[] = [];
    rt.actor.subscribe((snap) => states.push(stateString(snap.value)));
    s.setFaults({ cs: 2 });
    await new Promise((r) => setTimeout(r, 600));
    s.setFaults({ cs: 3 });
    await new Promise((r) => setTimeout(r, 600));
    expect(states.every((x) => x.startsWith('online'))).toBe(true);
    // losing EPS (data) registration does take it out of service
    s.setFaults({ registration: 'searching' });
    await reach(rt, 'left online', (x) => !x.matches('online'), 5_000);
    expect(rt.snapshot().context.reason).toBe('no_service');
  }, 60_000);
});
