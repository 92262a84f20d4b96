import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FleetEvents, type FleetEventMap } from '../../src/fleet/events.js';
import { Modem, type ModemDeps } from '../../src/fleet/modem.js';
import { ModemDirectory } from '../../src/fleet/modemDirectory.js';
import { silentLogger } from '../../src/log.js';
import { DEFAULT_POLICY } from '../../src/policy.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { ipJson } from '../../src/net/ip.js';
import { Store } from '../../src/store/store.js';
import type { Command, TransitionRecord } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { FAST_MODEM, until } from '../helpers/farm.js';

/**
 * One `Modem` without a supervisor: a real store on its own database, in-process simulated EC25s,
 * and the fleet events it emits. Identity and journal numbering, the journal rule, commands.
 */

let db: TestDatabase;
let dir: string;
let lab: SimLab;
let store: Store;
let events: FleetEvents;
let directory: ModemDirectory<Modem>;
let modems: Modem[];
let seen: { [K in keyof FleetEventMap]?: FleetEventMap[K][] };

/** Two simulated modems; `subnet0`: the /24 the first one's calls draw from (set before it attaches). */
async function startLab(subnet0?: string): Promise<SimLab> {
  const profiles = defaultProfiles(2, 41).map((p, i) => ({
    ...p,
    timings: { bootMs: 0, latencyMs: 0, attachMs: 20, resetMs: 100 },
    ...(i === 0 && subnet0 ? { subnet: subnet0 } : {}),
  }));
  const started = new SimLab({ dir: join(dir, `lab${subnet0 ? '-subnet' : ''}`), profiles, wire: 'memory' });
  await started.start();
  return started;
}

beforeEach(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-modem-'));
  lab = await startLab();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-m' });
  await store.registerHost({});
  events = new FleetEvents();
  directory = new ModemDirectory<Modem>();
  modems = [];
  seen = {};
  for (const name of ['transition', 'health', 'identified', 'allocated', 'alert'] as const)
    events.on(name, (payload) => ((seen[name] ??= []) as unknown[]).push(payload));
});

afterEach(async () => {
  await Promise.all(modems.map((m) => m.stop()));
  await lab.stop();
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

function deps(overrides: Partial<ModemDeps> = {}): ModemDeps {
  return {
    store,
    events,
    directory,
    policy: DEFAULT_POLICY,
    modem: { ...FAST_MODEM, signalPollMs: 50 },
    link: { openPort: lab.openPort, presencePollMs: 100, addressPollMs: 20 },
    log: silentLogger,
    stopping: () => false,
    track: () => undefined,
    ...overrides,
  };
}

/** A Modem at the place of simulated modem `place`, talking to the AT port of modem `port`. */
function start(place: number, port = place): Modem {
  const modem = new Modem(
    { usbPath: lab.usbPath(place), atPort: join(lab.scan.devRoot, `ttyUSB${4 * port + 2}`) },
    deps(),
  );
  modems.push(modem);
  modem.start();
  return modem;
}

const transitions = (imei: string): TransitionRecord[] =>
  (seen.transition ?? []).filter((t) => t.imei === imei);

const command = (id: number, imei: string, kind: Command['kind']): Command => ({
  id,
  imei,
  kind,
  status: 'running',
  requestedBy: 'test',
  requestedAt: new Date(),
});

describe('Modem', () => {
  it('an address no carrier gives is refused before it reaches routing: error hostile_address, alert, no ip rule', async () => {
    // the modem's calls draw from 127.0.0.x: a loopback address, with policy routing on (a lab of
    // its own: the default bearer gets its address at attach, before a later change could count)
    await lab.stop();
    lab = await startLab('127.0.0');
    const modem = new Modem(
      { usbPath: lab.usbPath(0), atPort: join(lab.scan.devRoot, 'ttyUSB2'), iface: 'wwan0' },
      deps({
        dataPlane: {
          backend: 'microsocks+tinyproxy',
          listen: '127.0.0.1',
          prefix: 32,
          runDir: join(dir, 'run'),
          dns: [],
          rulePriorityBase: 1_000,
        },
      }),
    );
    modems.push(modem);
    modem.start();
    await until(() => modem.top === 'error', 10_000, 'error');
    expect(modem.snapshot().context.reason).toBe('hostile_address');
    const alert = seen.alert?.find((a) => a.alert.kind === 'hostile_address');
    expect(alert).toMatchObject({ imei: lab.modem(0).imei, alert: { severity: 'critical' } });
    const wanIp = /reported (\S+): a loopback address; refused/.exec(alert?.alert.message ?? '')?.[1] ?? '';
    expect(wanIp).toMatch(/^127\.0\.0\.\d+$/);
    // nothing reached ip rule, and no proxy was started
    const rules = await ipJson<{ src?: string }>(['rule', 'show']);
    expect(rules.filter((r) => r.src === wanIp)).toEqual([]);
    expect(modem.proxyPids).toEqual([]);
  });

  it('identity: held transitions are journaled under the IMEI from seq 1, then it is recorded and allocated', async () => {
    const modem = start(0);
    const imei = lab.modem(0).imei;
    await until(() => modem.top === 'online' && modem.allocation !== undefined, 10_000, 'online, allocated');
    expect(modem.imei).toBe(imei);
    const journal = transitions(imei);
    expect(journal.map((t) => t.seq)).toEqual(journal.map((_, i) => i + 1));
    expect(journal[0]).toMatchObject({
      from: null,
      to: 'detecting.probing',
      event: 'xstate.init',
      host: 'host-m',
    });
    expect(journal.at(-1)).toMatchObject({ to: 'online.serving', wanIp: lab.modem(0).model.address });
    expect(seen.identified).toEqual([{ imei, usbPath: lab.usbPath(0) }]);
    expect(seen.allocated?.[0]).toMatchObject({ imei });
    expect((await store.modems({ imei }))[0]).toMatchObject({
      imei,
      iccid: lab.modem(0).model.profile.iccid,
    });
  });

  it('the journal rule: signal polls are health samples, not transitions', async () => {
    const modem = start(0);
    const imei = lab.modem(0).imei;
    // identified (its held transitions written) and online
    await until(() => modem.top === 'online' && modem.allocation !== undefined, 10_000, 'online');
    const rows = transitions(imei).length;
    expect(rows).toBeGreaterThan(0);
    const samples = seen.health?.length ?? 0;
    await until(() => (seen.health?.length ?? 0) >= samples + 5, 10_000, 'five more signal polls');
    expect(transitions(imei)).toHaveLength(rows);
    expect(seen.health?.at(-1)).toMatchObject({ imei, operator: lab.modem(0).model.profile.operator });
  });

  it('journal numbering continues across Modems of the same IMEI; another modem at the place ends the old journal', async () => {
    const first = start(0);
    const imei = lab.modem(0).imei;
    await until(() => first.top === 'online' && first.allocation !== undefined, 10_000, 'online');
    await first.stop();
    // the same place again: journaled under the presumed IMEI from its first state, continuing
    const again = start(0);
    await until(() => again.top === 'online' && again.allocation !== undefined, 10_000, 'online again');
    const journal = transitions(imei);
    expect(journal.map((t) => t.seq)).toEqual(journal.map((_, i) => i + 1));
    expect(journal.filter((t) => t.from === null)).toHaveLength(2);
    await again.stop();
    // a different modem answers at that place: the presumed one is journaled removed
    const other = lab.modem(1);
    const swapped = start(0, 1);
    await until(
      () => swapped.imei === other.imei && swapped.allocation !== undefined,
      10_000,
      'other identified',
    );
    expect(transitions(imei).at(-1)).toMatchObject({ to: 'removed', event: 'reconcile.replaced' });
    expect(transitions(imei).map((t) => t.seq)).toEqual(transitions(imei).map((_, i) => i + 1));
    // its own journal from seq 1 (its first states went under the presumed IMEI)
    expect(transitions(other.imei).map((t) => t.seq)).toEqual(transitions(other.imei).map((_, i) => i + 1));
  });

  it('commands: a rotation answers with the new address; a retired modem fails what waits', async () => {
    const modem = start(0);
    const imei = lab.modem(0).imei;
    await until(() => modem.top === 'online' && modem.allocation !== undefined, 10_000, 'online');
    const before = modem.snapshot().context.wanIp;
    const rotated = await modem.command(command(1, imei, 'rotate'));
    expect(rotated.ok).toBe(true);
    expect(rotated.result['previousIp']).toBe(before);
    expect(rotated.result['attempts']).toBeGreaterThanOrEqual(1);
    expect(rotated.result['wanIp']).not.toBe(before);
    expect(transitions(imei).map((t) => t.to)).toContain('online.rotating.detaching');
    // a reset waits for the modem; retiring it answers at once
    const reset = modem.command(command(2, imei, 'reset'));
    await modem.stop();
    expect(String((await reset).result['error'])).toMatch(/^(device_removed|interrupted)$/);
    expect(await modem.command(command(3, imei, 'rotate'))).toEqual({
      ok: false,
      result: { error: 'not_present' },
    });
  });
});
