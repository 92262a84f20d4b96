import { describe, expect, it } from 'vitest';
import { createActor, fromPromise, SimulatedClock } from 'xstate';
import { fleetMachine, planDevices, type FleetDevice, type FleetModem } from '../../machines/fleetMachine.js';

const dev = (n: number): FleetDevice => ({ usbPath: `1-1.${n}`, atPort: `/dev/ttyUSB${4 * n + 2}` });

function fleet(config = { maxRestarts: 2, restartWindowMs: 10_000 }) {
  const clock = new SimulatedClock();
  const log: string[] = [];
  const actor = createActor(
    fleetMachine.provide({
      actions: {
        startModems: (_, { devices }) => void log.push(`start ${devices.map((d) => d.usbPath).join(' ')}`),
        stopModem: (_, { usbPath }) => void log.push(`stop ${usbPath}`),
        forward: (_, { usbPath, event }) => void log.push(`${event} ${usbPath}`),
        alert: (_, { kind }) => void log.push(`alert ${kind}`),
      },
      actors: { stopAll: fromPromise(() => Promise.resolve()) },
    }),
    { clock, input: { config, now: () => clock.now() } },
  );
  actor.start();
  return { actor, log, clock };
}

describe('fleet machine', () => {
  it('starts a whole scan in one batch', () => {
    const { actor, log } = fleet();
    actor.send({ type: 'devices.changed', added: [dev(1), dev(2), dev(3)], removed: [] });
    expect(log).toEqual(['start 1-1.1 1-1.2 1-1.3']);
    expect(Object.keys(actor.getSnapshot().context.modems)).toEqual(['1-1.1', '1-1.2', '1-1.3']);
  });

  it('a removal is the modem actor’s to decide; its end releases the slot; a replug starts afresh', () => {
    const { actor, log } = fleet();
    actor.send({ type: 'devices.changed', added: [dev(1)], removed: [] });
    actor.send({ type: 'devices.changed', added: [], removed: ['1-1.1'] });
    expect(log.at(-1)).toBe('device.removed 1-1.1');
    // re-enumeration during a reset: the same tty comes back while the actor still runs
    actor.send({ type: 'devices.changed', added: [dev(1)], removed: [] });
    expect(log.at(-1)).toBe('device.added 1-1.1');
    actor.send({ type: 'modem.done', usbPath: '1-1.1' });
    expect(log.at(-1)).toBe('stop 1-1.1');
    expect(actor.getSnapshot().context.modems).toEqual({});
    actor.send({ type: 'devices.changed', added: [dev(1)], removed: [] });
    expect(log.at(-1)).toBe('start 1-1.1');
  });

  it('one_for_one: a crashed modem restarts alone, until restart intensity; a replug clears it', () => {
    const { actor, log, clock } = fleet();
    actor.send({ type: 'devices.changed', added: [dev(1), dev(2)], removed: [] });
    log.length = 0;
    actor.send({ type: 'modem.crashed', usbPath: '1-1.1', error: 'bug' });
    actor.send({ type: 'modem.crashed', usbPath: '1-1.1', error: 'bug' });
    expect(log).toEqual(['stop 1-1.1', 'start 1-1.1', 'stop 1-1.1', 'start 1-1.1']);
    actor.send({ type: 'modem.crashed', usbPath: '1-1.1', error: 'bug' });
    expect(log.slice(-2)).toEqual(['stop 1-1.1', 'alert modem_restart_intensity']);
    expect(actor.getSnapshot().context.modems['1-1.1']?.status).toBe('failed');
    expect(actor.getSnapshot().context.modems['1-1.2']?.status).toBe('running');
    // the window passes: old restarts no longer count (after a replug)
    clock.increment(20_000);
    actor.send({ type: 'devices.changed', added: [], removed: ['1-1.1'] });
    expect(actor.getSnapshot().context.modems['1-1.1']).toBeUndefined();
    actor.send({ type: 'devices.changed', added: [dev(1)], removed: [] });
    expect(log.at(-1)).toBe('start 1-1.1');
  });

  it('stop: every modem is stopped, then the fleet is done', async () => {
    const { actor } = fleet();
    actor.send({ type: 'devices.changed', added: [dev(1)], removed: [] });
    actor.send({ type: 'stop' });
    await new Promise((r) => setTimeout(r, 0));
    expect(actor.getSnapshot().status).toBe('done');
  });

  it('planDevices: a different tty at a known place replaces the actor', () => {
    const modems: Record<string, FleetModem> = {
      '1-1.1': { ...dev(1), status: 'running', restarts: [] },
    };
    const plan = planDevices(modems, [{ usbPath: '1-1.1', atPort: '/dev/ttyUSB9' }], []);
    expect(plan.forward).toEqual([{ usbPath: '1-1.1', event: 'device.removed' }]);
    expect(plan.start).toEqual([{ usbPath: '1-1.1', atPort: '/dev/ttyUSB9' }]);
    expect(plan.modems['1-1.1']?.atPort).toBe('/dev/ttyUSB9');
  });
});
