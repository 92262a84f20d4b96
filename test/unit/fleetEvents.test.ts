import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { FleetCounters, FleetEvents } from '../../src/fleet/events.js';
import { createRootLogger, modemLogger } from '../../src/log.js';

function capture(): { log: ReturnType<typeof createRootLogger>; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean))
        lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { log: createRootLogger({ level: 'debug', destination }), lines };
}

describe('fleet events', () => {
  it('delivers to every subscriber in order; a throwing one is logged and the rest still get it', () => {
    const { log, lines } = capture();
    const events = new FleetEvents(log);
    const got: string[] = [];
    events.on('identified', ({ imei }) => got.push(`a${imei}`));
    events.on('identified', () => {
      throw new Error('broken subscriber');
    });
    const off = events.on('identified', ({ imei }) => got.push(`c${imei}`));
    events.emit('identified', { imei: '1', usbPath: '1-1' });
    off();
    events.emit('identified', { imei: '2', usbPath: '1-1' });
    expect(got).toEqual(['a1', 'c1', 'a2']);
    expect(lines.filter((l) => l['msg'] === 'fleet event listener failed')).toHaveLength(2);
  });

  it('counters follow the stream', () => {
    const events = new FleetEvents();
    const counters = new FleetCounters(events);
    events.emit('proxy.restarted', { imei: '1' });
    events.emit('egress', { imei: '1', expected: '10.0.0.1', seen: null, ok: false });
    events.emit('egress', { imei: '1', expected: '10.0.0.1', seen: '10.0.0.1', ok: true });
    events.emit('dataplane.up', { imei: '1', iface: 'wwan0', wanIp: '10.0.0.1', socksPort: 1, httpPort: 2 });
    expect(counters).toMatchObject({ proxyRestarts: 1, egressChecks: 2, egressFailures: 1, dataPlanesUp: 1 });
    events.emit('dataplane.down', { imei: '1' });
    expect(counters.dataPlanesUp).toBe(0);
  });

  it('rotations are counted by result, with a label from a small known set', () => {
    const events = new FleetEvents();
    const counters = new FleetCounters(events);
    const command = (kind: 'rotate' | 'reset') =>
      ({
        id: 1,
        imei: '866834041234567',
        kind,
        requestedBy: 'test',
        requestedAt: new Date(),
        status: 'running',
      }) as const;
    events.emit('command.finished', { command: command('rotate'), outcome: { ok: true, result: {} } });
    events.emit('command.finished', {
      command: command('rotate'),
      outcome: { ok: false, result: { error: 'same_public_ip' } },
    });
    events.emit('command.finished', {
      command: command('rotate'),
      outcome: { ok: false, result: { error: 'Not A Code {"x":1}' } },
    });
    events.emit('command.finished', { command: command('reset'), outcome: { ok: true, result: {} } });
    expect(Object.fromEntries(counters.rotations)).toEqual({ done: 1, same_public_ip: 1, other: 1 });
  });
});

describe('modem logger', () => {
  it('every line of a modem and of its children carries modem: <imei> once identified', () => {
    const { log, lines } = capture();
    const { log: modem, identify } = modemLogger(log.child({ component: 'supervisor' }), '1-1.2');
    const link = modem.child({ component: 'link' });
    link.info('before');
    identify('866758042169432');
    const transport = link.child({ component: 'at' });
    link.info('after');
    transport.info('grandchild');
    modem.info('own');
    log.info('root');
    expect(lines.map((l) => [l['msg'], l['modem'], l['usbPath']])).toEqual([
      ['before', undefined, '1-1.2'],
      ['after', '866758042169432', '1-1.2'],
      ['grandchild', '866758042169432', '1-1.2'],
      ['own', '866758042169432', '1-1.2'],
      ['root', undefined, undefined],
    ]);
  });
});
