import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AtTransport } from '../../src/at/atTransport.js';
import { AtCommandError, type AtError, type Urc } from '../../src/at/types.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimModem } from '../../src/sim/simModem.js';
import { until } from '../helpers/until.js';

let dir: string;
let sims: SimModem[] = [];
let transports: AtTransport[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-at-'));
});
afterEach(async () => {
  await Promise.all(transports.map((t) => t.stop()));
  await Promise.all(sims.map((s) => s.stop()));
  transports = [];
  sims = [];
  await rm(dir, { recursive: true, force: true });
  const left = await execa('pgrep', ['-f', `socat.*${dir}`], { reject: false });
  expect(left.stdout).toBe('');
});

async function sim(faults = {}): Promise<SimModem> {
  const [profile] = defaultProfiles(1, sims.length + 1);
  if (!profile) throw new Error('no profile');
  Object.assign(profile.faults, faults);
  profile.timings.bootMs = 50;
  const s = new SimModem({ profile, dir, name: `ttyUSB${2 + 4 * sims.length}` });
  sims.push(s);
  await s.start();
  return s;
}

async function open(s: SimModem, urcs: Urc[] = [], extra = {}): Promise<AtTransport> {
  const t = new AtTransport({ path: s.atPort, onUrc: (u) => urcs.push(u), presencePollMs: 100, ...extra });
  transports.push(t);
  await t.start();
  return t;
}

const soon = { timeoutMs: 3_000, intervalMs: 10 };

describe('AT transport over a real PTY', () => {
  it('boot URCs, echo, answers and URCs kept apart', async () => {
    const s = await sim();
    const urcs: Urc[] = [];
    const t = await open(s, urcs);
    await until(() => urcs.some((u) => u.line === '+QIND: PB DONE'), soon);
    expect(urcs.map((u) => u.line)).toEqual([
      'RDY',
      '+CPIN: READY',
      '+QUSIM: 1',
      '+QIND: SMS DONE',
      '+QIND: PB DONE',
    ]);
    // echo is still on: tolerated
    expect((await t.send('AT+CGSN')).lines).toEqual([s.imei]);
    await t.send('ATE0');
    expect((await t.send('ATI')).lines).toEqual(['Quectel', 'EC25', 'Revision: EC25EFAR06A11M4G']);
    expect((await t.send('AT+CPIN?')).lines).toEqual(['+CPIN: READY']);
    expect((await t.send('AT+QCCID')).lines[0]).toMatch(/^\+QCCID: 89\d{16,18}F$/);
    // queue: many at once, answered in order
    const answers = await Promise.all(['AT+CGMI', 'AT+CGMM', 'AT+CGMR', 'AT+CFUN?'].map((c) => t.send(c)));
    expect(answers.map((a) => a.lines[0])).toEqual(['Quectel', 'EC25', 'EC25EFAR06A11M4G', '+CFUN: 1']);
  });

  it('+CME ERROR and ERROR reject with the code; the session goes on', async () => {
    const s = await sim({ noSim: true });
    const t = await open(s);
    const err = await t.send('AT+CIMI').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AtCommandError);
    expect((err as AtCommandError).cme).toBe(10);
    await expect(t.send('AT+NOPE')).rejects.toMatchObject({ code: 'at_error', final: { kind: 'error' } });
    expect((await t.send('AT')).final).toEqual({ kind: 'ok' });
  });

  it('a modem that stops answering: each command times out; N in a row close the port', async () => {
    const s = await sim({ hang: true });
    const closed: AtError[] = [];
    const t = await open(s, [], { maxConsecutiveTimeouts: 3, onClose: (r: AtError) => closed.push(r) });
    const started = Date.now();
    await expect(t.send('AT', { timeoutMs: 200 })).rejects.toMatchObject({ code: 'at_timeout' });
    expect(Date.now() - started).toBeLessThan(1000);
    await expect(t.send('AT', { timeoutMs: 100 })).rejects.toMatchObject({ code: 'at_timeout' });
    await expect(t.send('AT', { timeoutMs: 100 })).rejects.toMatchObject({ code: 'at_timeout' });
    await until(() => closed.length === 1, soon);
    expect(closed[0]?.message).toMatch(/3 consecutive AT timeouts/);
    await expect(t.send('AT')).rejects.toMatchObject({ code: 'port_lost' });
  });

  it('unplug in mid-command: port_lost within 2 s, no CPU spin afterwards', async () => {
    const s = await sim({ slowMs: 5000 });
    const t = await open(s);
    const pending = t.send('AT+CGSN', { timeoutMs: 10_000 }).catch((e: unknown) => e);
    await new Promise((r) => setTimeout(r, 100));
    const unpluggedAt = Date.now();
    await s.unplug();
    expect(await pending).toMatchObject({ code: 'port_lost' });
    expect(Date.now() - unpluggedAt).toBeLessThan(2000);
    expect(t.closed).toBe(true);
    const cpu = process.cpuUsage();
    const wall = Date.now();
    await new Promise((r) => setTimeout(r, 1000));
    const used = process.cpuUsage(cpu);
    expect((used.user + used.system) / 1000 / (Date.now() - wall)).toBeLessThan(0.5);
  });

  it('AT+CFUN=1,1: the port goes away, comes back at the same path, then RDY', async () => {
    const s = await sim();
    const t = await open(s);
    await t.send('ATE0');
    const lost = t.whenClosed();
    await t.send('AT+CFUN=1,1', { timeoutMs: 15_000 });
    expect((await lost).code).toBe('port_lost');
    await until(() => s.enumerations === 2 && s.plugged, { ...soon, timeoutMs: 5_000 });
    const urcs: Urc[] = [];
    const again = await open(s, urcs);
    await until(() => urcs.some((u) => u.line === 'RDY'), soon);
    expect((await again.send('AT+CGSN')).lines).toEqual([s.imei]);
  });
});
