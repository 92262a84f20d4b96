import { describe, expect, it } from 'vitest';
import { backoffFor, reasonOf } from '../../machines/modemMachine.js';
import { DEFAULT_MODEM_CONFIG } from '../../machines/modemTypes.js';
import { FAST_CONFIG, FakeModem, harness } from '../helpers/fakeModem.js';

describe('modem machine', () => {
  it('boots detecting → initializing → online with an address, and polls signal', async () => {
    const h = harness();
    await h.advance(200);
    expect(h.state()).toBe('online.serving');
    const ctx = h.actor.getSnapshot().context;
    expect(ctx).toMatchObject({
      wanIp: '10.0.0.2',
      registration: 'home',
      operator: 'Vodafone',
      reason: null,
    });
    expect(ctx.identity?.imei).toBe('866834040000017');
    expect(h.states.slice(0, 6)).toEqual([
      'detecting.probing',
      'initializing.identity',
      'initializing.sim',
      'initializing.registering.query',
      'initializing.connecting',
      'online.serving',
    ]);
    await h.advance(1_100);
    expect(h.health.length).toBeGreaterThanOrEqual(1);
  });

  it.each([
    ['missing', 'sim_missing'],
    ['pin', 'sim_locked'],
    ['puk', 'sim_locked'],
  ] as const)('SIM %s → error %s with an alert', async (sim, reason) => {
    const world = new FakeModem();
    world.sim = sim;
    const h = harness(FAST_CONFIG, world);
    await h.advance(200);
    expect(h.state()).toBe('error');
    expect(h.actor.getSnapshot().context.reason).toBe(reason);
    expect(h.alerts.at(-1)).toMatchObject({ kind: `modem_${reason}`, severity: 'critical' });
  });

  it('SIM busy (CME 14) is retried with a radio off/on halfway, then comes online', async () => {
    const world = new FakeModem();
    world.sim = 'busy';
    const h = harness({ ...FAST_CONFIG, simRetries: 4, simRetryMs: 100 }, world);
    await h.advance(150);
    expect(h.states).toContain('initializing.simWaiting');
    await h.advance(400);
    expect(h.states).toContain('initializing.simCycling');
    expect(world.calls).toContain('softReset');
    world.sim = 'ready';
    await h.advance(1_000);
    expect(h.state()).toBe('online.serving');
    expect(h.actor.getSnapshot().context.reason).toBeNull();
  });

  it('a SIM that stays failing (CME 13) goes to the ladder as sim_missing, not straight to error', async () => {
    const world = new FakeModem();
    world.sim = 'failure';
    const h = harness(FAST_CONFIG, world);
    await h.advance(400);
    expect(h.states).toContain('recovering.backoff');
    expect(h.actor.getSnapshot().context).toMatchObject({
      reason: 'sim_missing',
      lastError: 'the SIM keeps failing (CME 13)',
    });
  });

  it.each([
    ['usbnet', 'usbnet_mode'],
    ['rawIp', 'raw_ip_off'],
  ] as const)('%s wrong → error %s at once (no rung can fix it)', async (knob, reason) => {
    const world = new FakeModem();
    if (knob === 'usbnet') world.usbnet = 1;
    else world.rawIp = false;
    const h = harness(FAST_CONFIG, world);
    await h.advance(300);
    expect(h.state()).toBe('error');
    expect(h.actor.getSnapshot().context.reason).toBe(reason);
    expect(h.states).not.toContain('recovering.backoff');
  });

  it('a call that never comes up climbs the ladder and ends in error no_data_call', async () => {
    const world = new FakeModem();
    world.callStarts = false;
    const h = harness({ ...FAST_CONFIG, maxRecoveries: 10 }, world);
    await h.advance(6_000, 50);
    expect(h.states).toContain('recovering.softResetting');
    expect(h.state()).toBe('error');
    expect(h.actor.getSnapshot().context.reason).toBe('no_data_call');
  });

  it('a dropped call (+CGEV, or found down by the poll) is redialled without leaving online', async () => {
    const world = new FakeModem();
    const h = harness(FAST_CONFIG, world);
    await h.advance(200);
    const before = h.actor.getSnapshot().context.wanIp;
    h.actor.send({ type: 'call.lost', detail: '+CGEV: NW PDN DEACT 1' });
    await h.advance(50);
    expect(h.states).toContain('online.redialing');
    expect(h.state()).toBe('online.serving');
    expect(h.actor.getSnapshot().context.wanIp).not.toBe(before);
    expect(world.calls.filter((c) => c === 'redial')).toHaveLength(1);
    // the periodic check finds the call down
    world.callUp = false;
    await h.advance(1_100);
    expect(world.calls.filter((c) => c === 'redial')).toHaveLength(2);
    expect(h.state()).toBe('online.serving');
    // a redial that fails: the ladder
    world.callStarts = false;
    h.actor.send({ type: 'call.lost', detail: 'x' });
    await h.advance(50);
    expect(h.state()).toMatch(/^recovering/);
    expect(h.actor.getSnapshot().context.reason).toBe('no_data_call');
  });

  it('silence after a redial (call.dead) goes to the ladder; a rotation ignores call.lost', async () => {
    const h = harness();
    await h.advance(200);
    h.actor.send({ type: 'command.rotate', id: 1 });
    await h.advance(10);
    h.actor.send({ type: 'call.lost', detail: 'x' });
    await h.advance(10);
    expect(h.state()).toMatch(/^online\.rotating/);
    await h.advance(1_000);
    expect(h.results.at(-1)).toMatchObject({ id: 1, ok: true });
    h.actor.send({ type: 'call.dead', detail: 'no answer through the ports after a redial' });
    await h.advance(10);
    expect(h.state()).toMatch(/^recovering/);
    expect(h.actor.getSnapshot().context.reason).toBe('no_data_call');
  });

  it('registration denied → error; searching forever → no_service via the ladder', async () => {
    const denied = new FakeModem();
    denied.registration = 'denied';
    const a = harness(FAST_CONFIG, denied);
    await a.advance(200);
    expect(a.state()).toBe('error');
    expect(a.actor.getSnapshot().context.reason).toBe('registration_denied');

    const searching = new FakeModem();
    searching.registration = 'searching';
    const b = harness(FAST_CONFIG, searching);
    await b.advance(1_500);
    expect(b.states).toContain('recovering.backoff');
    expect(b.actor.getSnapshot().context.reason).toBe('no_service');
    expect(b.states).not.toContain('online.serving');
  });

  it('the recovery ladder: reinit → soft reset → hard reset → (no power cycle) → error, backoff growing', async () => {
    const world = new FakeModem();
    world.dataCall = false;
    const h = harness({ ...FAST_CONFIG, maxRecoveries: 10 }, world);
    await h.advance(20_000);
    expect(h.state()).toBe('error');
    expect(h.actor.getSnapshot().context.reason).toBe('data_call_failed');
    const rungs = world.calls.filter((c) => ['softReset', 'hardReset', 'powerCycle'].includes(c));
    expect(rungs).toEqual(['softReset', 'hardReset']);
    expect(h.states.filter((s) => s === 'recovering.backoff').length).toBe(4);
    // no automatic attempts after giving up
    const calls = world.calls.length;
    await h.advance(60_000, 1000);
    expect(world.calls.length).toBe(calls);
    // an operator reset starts again
    world.dataCall = true;
    h.actor.send({ type: 'command.reset', id: 7 });
    await h.advance(3_000);
    expect(h.state()).toBe('online.serving');
    expect(h.results).toContainEqual({ id: 7, kind: 'reset', ok: true, result: {} });
  });

  it('the USB-level reset comes before power; power cycle is the last rung when configured', async () => {
    const world = new FakeModem();
    world.dataCall = false;
    const h = harness({ ...FAST_CONFIG, usbReset: true, powerCycle: true, maxRecoveries: 10 }, world);
    await h.advance(30_000);
    expect(
      world.calls.filter((c) => ['softReset', 'hardReset', 'usbReset', 'powerCycle'].includes(c)),
    ).toEqual(['softReset', 'hardReset', 'usbReset', 'powerCycle']);
    expect(h.state()).toBe('error');
    // power only, without the USB reset: the unconfigured rung is skipped
    const w2 = new FakeModem();
    w2.dataCall = false;
    const h2 = harness({ ...FAST_CONFIG, powerCycle: true, maxRecoveries: 10 }, w2);
    await h2.advance(30_000);
    expect(w2.calls.filter((c) => ['hardReset', 'usbReset', 'powerCycle'].includes(c))).toEqual([
      'hardReset',
      'powerCycle',
    ]);
  });

  it('restart intensity: more than R recoveries in T → error restart_intensity', async () => {
    const world = new FakeModem();
    const h = harness({ ...FAST_CONFIG, maxRecoveries: 2 }, world);
    await h.advance(200);
    for (let i = 0; i < 3; i++) {
      h.actor.send({ type: 'port.lost', detail: 'test' });
      await h.advance(500);
    }
    expect(h.state()).toBe('error');
    expect(h.actor.getSnapshot().context.reason).toBe('restart_intensity');
  });

  it('rotation: a new address → success; the same address every time → rotation_failed, still online', async () => {
    const h = harness();
    await h.advance(200);
    const before = h.actor.getSnapshot().context.wanIp;
    h.actor.send({ type: 'command.rotate', id: 1 });
    h.actor.send({ type: 'command.rotate', id: 2 });
    await h.advance(1_000);
    expect(h.state()).toBe('online.serving');
    const after = h.actor.getSnapshot().context.wanIp;
    expect(after).not.toBe(before);
    expect(h.results).toEqual([
      { id: 2, kind: 'rotate', ok: false, result: { error: 'busy' } },
      { id: 1, kind: 'rotate', ok: true, result: { previousIp: before, wanIp: after, attempts: 1 } },
    ]);

    h.world.sameAddress = true;
    h.actor.send({ type: 'command.rotate', id: 3 });
    await h.advance(3_000);
    expect(h.state()).toBe('online.serving');
    expect(h.actor.getSnapshot().context.wanIp).toBe(after);
    expect(h.results.at(-1)).toEqual({
      id: 3,
      kind: 'rotate',
      ok: false,
      result: { error: 'rotation_failed', wanIp: after, attempts: 3 },
    });
    expect(h.alerts.at(-1)?.kind).toBe('rotation_failed');
    expect(h.world.calls.filter((c) => c === 'detach').length).toBe(1 + 3);
  });

  it('rotate when not online is refused with a clear result', async () => {
    const world = new FakeModem();
    world.answers = false;
    const h = harness(FAST_CONFIG, world);
    h.actor.send({ type: 'command.rotate', id: 9 });
    await h.advance(10);
    expect(h.results).toEqual([{ id: 9, kind: 'rotate', ok: false, result: { error: 'not_online' } }]);
  });

  it('disable puts the radio off (CFUN=4); enable brings it back online; a disabled modem stays disabled after a reboot', async () => {
    const h = harness();
    await h.advance(200);
    h.actor.send({ type: 'command.disable', id: 1 });
    await h.advance(50);
    expect(h.state()).toBe('disabled');
    expect(h.actor.getSnapshot().context.wanIp).toBeNull();
    h.actor.send({ type: 'urc.rdy' });
    await h.advance(50);
    expect(h.state()).toBe('disabled');
    expect(h.world.calls.filter((c) => c === 'disableRadio').length).toBe(2);
    h.actor.send({ type: 'command.enable', id: 2 });
    await h.advance(300);
    expect(h.state()).toBe('online.serving');
    expect(h.results).toEqual([
      { id: 1, kind: 'disable', ok: true, result: {} },
      { id: 2, kind: 'enable', ok: true, result: {} },
    ]);

    const d = harness(FAST_CONFIG, new FakeModem(), 'disabled');
    await d.advance(200);
    expect(d.state()).toBe('disabled');
  });

  it('RDY while online re-initialises; lost registration recovers; removal is final from anywhere', async () => {
    const h = harness();
    await h.advance(200);
    const seen = h.states.length;
    h.actor.send({ type: 'urc.rdy' });
    await h.advance(300);
    expect(h.states.slice(seen, seen + 2)).toEqual(['detecting.probing', 'initializing.identity']);
    expect(h.state()).toBe('online.serving');
    h.actor.send({ type: 'urc.registration', stat: 'searching' });
    await h.advance(10);
    expect(h.state()).toMatch(/^recovering/);
    expect(h.actor.getSnapshot().context.reason).toBe('no_service');
    h.actor.send({ type: 'device.removed' });
    await h.advance(10);
    expect(h.state()).toBe('removed');
    expect(h.actor.getSnapshot().status).toBe('done');
  });

  it('port lost (N timeouts in the transport) → recovering with port_lost', async () => {
    const h = harness();
    await h.advance(200);
    h.actor.send({ type: 'port.lost', detail: '10 consecutive AT timeouts' });
    await h.advance(10);
    expect(h.state()).toMatch(/^recovering/);
    expect(h.actor.getSnapshot().context).toMatchObject({
      reason: 'port_lost',
      lastError: '10 consecutive AT timeouts',
    });
  });

  it('helpers: reasons from error codes, backoff capped', () => {
    expect(reasonOf({ code: 'at_timeout' }, 'data_call_failed')).toBe('at_timeout');
    expect(reasonOf(new Error('x'), 'data_call_failed')).toBe('data_call_failed');
    const delays = [0, 1, 2, 3, 10].map((rung) => backoffFor({ config: DEFAULT_MODEM_CONFIG, rung }));
    expect(delays).toEqual([1000, 2000, 4000, 8000, 60000]);
  });
});
