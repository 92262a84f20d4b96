import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { LabWwan } from '../../src/sim/lab/labWwan.js';
import { NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { Store } from '../../src/store/store.js';
import { FAST_MODEM, labSupervisor } from '../helpers/farm.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { labDataPlane } from '../helpers/labDataPlane.js';
import { until } from '../helpers/until.js';

/**
 * The EC25's QMI-mode data path end to end, as root: the lab's kernel stand-in (LabWwan) passes a
 * modem's traffic only when its link is in raw-IP mode and the host's call (`AT$QCRMCALL`) is up,
 * as a real qmi_wwan link does. The normal path carries traffic; a link that cannot go raw-IP, a
 * call that never comes up and a modem in ECM mode each end in `error` with their reason, and
 * nothing passes; a net interface renamed by udev keeps serving under its new name; a supervisor
 * restart (handover) keeps an online modem's call, link and proxy as they are.
 */

const N = 4;
let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
let wwan: LabWwan;
let supervisor: Supervisor;

const modems = () =>
  db.sql<
    {
      imei: string;
      state: string;
      reason: string | null;
      wan_ip: string | null;
      usb_path: string;
      socks_port: number;
      proxy_user: string;
      proxy_password: string;
    }[]
  >`select m.imei, m.state, m.reason, host(m.wan_ip) as wan_ip, m.usb_path, a.socks_port, a.proxy_user, a.proxy_password
    from modems m join allocations a using (imei) order by m.usb_path`;

const byPath = async (i: number) => (await modems()).find((m) => m.usb_path === lab.usbPath(i));

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-qmi-'));
  await chmod(dir, 0o711);
  net = new NetLab({ name: `mq${randomBytes(2).toString('hex')}`, modems: N });
  await net.start();
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 61).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      // modem 2: `AT$QCRMCALL=1,1` answers OK but no call comes up; modem 3: ECM mode
      faults: { ...p.faults, callSilentlyFails: i === 2 },
      usbnet: i === 3 ? 1 : 0,
    })),
  });
  await lab.start();
  wwan = new LabWwan(net, lab);
  await wwan.start();
  // modem 1: the kernel accepts the raw_ip write but the link stays N
  wwan.setFaults(1, { rawIpStuck: true });
  supervisor = newSupervisor();
  await supervisor.start();
}, 60_000);

/** A supervisor on the lab's state (a second one after a handover takes over from the first). */
function newSupervisor(): Supervisor {
  return new Supervisor(
    labSupervisor(new Store({ sql: db.sql, url: db.url, hostId: 'qmi-host' }), lab, join(dir, 'state'), {
      modem: { ...FAST_MODEM, signalPollMs: 1_000, maxRecoveries: 10 },
      link: { presencePollMs: 100, addressPollMs: 50, wwan },
      dataPlane: labDataPlane(net, join(dir, 'run'), { prefix: 32, proxyUidBase: undefined }),
    }),
  );
}

afterAll(async () => {
  await supervisor?.stop();
  await wwan?.stop();
  await lab?.stop();
  await net?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('QMI data path in the lab', () => {
  it('the normal path carries traffic; raw_ip off, no call, ECM mode → error with their reason, nothing passes', async () => {
    await until(async () => (await byPath(0))?.state === 'online', 30_000, 'modem 0 online');
    const m0 = (await byPath(0))!;
    let seen: string | null = null;
    await until(
      async () => (seen = await net.probe('socks', m0.socks_port, m0.proxy_user, m0.proxy_password)) !== null,
      20_000,
      'traffic through modem 0',
    );
    expect(seen).toBe(m0.wan_ip);
    expect(wwan.passes(0)).toBe(true);

    const reasons = [
      [1, 'raw_ip_off'],
      [2, 'no_data_call'],
      [3, 'usbnet_mode'],
    ] as const;
    for (const [i, reason] of reasons) {
      await until(
        async () => {
          const m = await byPath(i);
          return m?.state === 'error' && m.reason === reason;
        },
        60_000,
        `modem ${i} in error with ${reason} (is ${JSON.stringify(await byPath(i))})`,
      );
      expect(wwan.passes(i)).toBe(false);
    }
    // raw_ip off is found at once (no rung can fix it); no call climbs the ladder first
    const journal = await db.sql<{ usb: string; to_state: string }[]>`
      select m.usb_path as usb, t.to_state from modem_transitions t join modems m using (imei) order by t.imei, t.seq`;
    const of = (i: number) => journal.filter((r) => r.usb === lab.usbPath(i)).map((r) => r.to_state);
    expect(of(1).some((s) => s.startsWith('recovering'))).toBe(false);
    expect(of(2).some((s) => s.startsWith('recovering'))).toBe(true);
  }, 120_000);

  it('a net interface renamed by udev keeps serving under its new name', async () => {
    const before = (await byPath(0))!;
    await net.rename(0, 'wwp0s20u1i4');
    await lab.sysfs.renameNet(lab.usbPath(0), 'wwp0s20u1i4');
    await until(
      () => [...supervisor.modems.values()].some((m) => m.iface === 'wwp0s20u1i4' && m.top === 'online'),
      20_000,
      'the modem follows the rename',
    );
    let seen: string | null = null;
    await until(
      async () => {
        const m = (await byPath(0))!;
        seen = await net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password);
        return seen !== null && seen === m.wan_ip;
      },
      30_000,
      'traffic through the renamed link',
    );
    expect((await byPath(0))?.imei).toBe(before.imei);
    expect(wwan.passes(0)).toBe(true);
  }, 90_000);

  it('a supervisor restart (handover) keeps the call up, the link up and the proxy serving; the next run adopts them', async () => {
    const modemAt = () => [...supervisor.modems.values()].find((m) => m.usbPath === lab.usbPath(0));
    const m0 = (await byPath(0))!;
    const iface = modemAt()?.iface ?? '';
    const pids = modemAt()?.proxyPids ?? [];
    expect(pids).toHaveLength(2);
    // the kernel counts every down/up of a link: an unchanged count means it never went down
    const carrierChanges = async () =>
      (await net.inFarm(['cat', `/sys/class/net/${iface}/carrier_changes`])).stdout.trim();
    const before = await carrierChanges();
    const calls: boolean[] = [];
    const off = lab.modem(0).onEvent((e) => void (e.type === 'hostCall' && calls.push(e.up)));
    try {
      await supervisor.stop({ handover: true });
      // no supervisor: the modem's call, link and proxy carry on
      expect(wwan.passes(0)).toBe(true);
      expect(await net.probe('socks', m0.socks_port, m0.proxy_user, m0.proxy_password)).toBe(m0.wan_ip);

      supervisor = newSupervisor();
      await supervisor.start();
      await until(
        () => modemAt()?.top === 'online' && modemAt()?.proxyAdopted === true,
        30_000,
        'modem 0 online again with its proxy adopted',
      );
      expect(modemAt()?.proxyPids).toEqual(pids);
      expect(calls).toEqual([]);
      expect(await carrierChanges()).toBe(before);
      expect(wwan.passes(0)).toBe(true);
      const m = (await byPath(0))!;
      expect(m.wan_ip).toBe(m0.wan_ip);
      expect(await net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password)).toBe(m0.wan_ip);
    } finally {
      off();
    }
  }, 90_000);
});
