import { mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Detector } from '../../src/detect/detector.js';
import { SysfsWatchSource } from '../../src/detect/hotplugSources.js';
import { scanUsbModems } from '../../src/detect/sysfsScan.js';
import type { DetectionEvent } from '../../src/detect/types.js';
import { FakeSysfs } from '../../src/sim/fakeSysfs.js';
import { until } from '../helpers/until.js';

let sys: FakeSysfs;
beforeEach(async () => {
  sys = new FakeSysfs(await mkdtemp(join(tmpdir(), 'mf-sysfs-')));
  await sys.start();
});
afterEach(async () => {
  await sys.stop();
});

const soon = { timeoutMs: 3_000, intervalMs: 20 };

describe('sysfs detection', () => {
  it('groups each modem by USB path, even when by-id names collide', async () => {
    // two EC25s with old firmware: both are usb-Android_Android-if02-port0 in /dev/serial/by-id
    await sys.plug({ usbPath: '1-1.2', ttys: [0, 1, 2, 3], net: 'wwan0', wdm: 'cdc-wdm0' });
    await sys.plug({ usbPath: '1-1.3', ttys: [4, 5, 6, 7], net: 'wwan1', wdm: 'cdc-wdm1' });
    // not a modem: a keyboard
    const kbd = join(sys.root, 'devices', 'usb1', '1-1.1');
    await mkdir(kbd, { recursive: true });
    await writeFile(join(kbd, 'idVendor'), '046d\n');
    await writeFile(join(kbd, 'idProduct'), 'c31c\n');
    await symlink(kbd, join(sys.root, 'bus', 'usb', 'devices', '1-1.1'));
    // a modem stuck in emergency download mode after a bad reset
    await sys.plug({
      usbPath: '1-1.10',
      vid: '05c6',
      pid: '9008',
      manufacturer: 'Qualcomm CDMA Technologies MSM',
      product: 'QHSUSB__BULK',
    });

    const found = await scanUsbModems({ sysRoot: sys.root, devRoot: '/dev' });
    expect(found.map((d) => d.usbPath)).toEqual(['1-1.2', '1-1.3', '1-1.10']);
    const [a, b, stuck] = found;
    expect(a).toMatchObject({
      model: 'EC25',
      vendor: 'Quectel',
      usb: { manufacturer: 'Android', product: 'Android', serial: '0' },
      controller: '0000:00:14.0',
      ports: { diag: '/dev/ttyUSB0', nmea: '/dev/ttyUSB1', at: '/dev/ttyUSB2', modem: '/dev/ttyUSB3' },
      atCandidates: ['/dev/ttyUSB2', '/dev/ttyUSB3', '/dev/ttyUSB0', '/dev/ttyUSB1'],
      net: 'wwan0',
      netDriver: 'qmi_wwan',
      usbnet: 0,
      wdm: '/dev/cdc-wdm0',
    });
    expect(a?.fault).toBeUndefined();
    expect(b).toMatchObject({ ports: { at: '/dev/ttyUSB6' }, net: 'wwan1', wdm: '/dev/cdc-wdm1' });
    expect(a?.usb).toEqual(b?.usb); // identical USB strings: the identity comes from AT+CGSN, not from here
    expect(stuck?.fault).toMatch(/emergency download/);
    expect(stuck?.faultCode).toBe('emergency_download');
  });

  it('finds the functions by driver in every usbnet layout', async () => {
    const wdm = { 0: 'cdc-wdm0', 1: undefined, 2: 'cdc-wdm2', 3: undefined } as const;
    for (const usbnet of [0, 1, 2, 3] as const)
      await sys.plug({
        usbPath: `1-1.${usbnet + 1}`,
        usbnet,
        ttys: [4 * usbnet, 4 * usbnet + 1, 4 * usbnet + 2, 4 * usbnet + 3],
        net: `net${usbnet}`,
        wdm: wdm[usbnet],
      });
    const found = await scanUsbModems({ sysRoot: sys.root, devRoot: '/dev' });
    const expected = [
      { driver: 'qmi_wwan', wdm: '/dev/cdc-wdm0' },
      { driver: 'cdc_ether', wdm: undefined },
      { driver: 'cdc_mbim', wdm: '/dev/cdc-wdm2' },
      { driver: 'rndis_host', wdm: undefined },
    ];
    for (const [usbnet, d] of found.entries()) {
      const base = 4 * usbnet;
      const e = expected[usbnet];
      // RNDIS moves the serial functions to if02-if05: the AT port is still the third serial one
      expect(d, `usbnet ${usbnet}`).toMatchObject({
        usbnet,
        netDriver: e?.driver,
        net: `net${usbnet}`,
        ports: { diag: `/dev/ttyUSB${base}`, at: `/dev/ttyUSB${base + 2}`, modem: `/dev/ttyUSB${base + 3}` },
        atCandidates: [base + 2, base + 3, base, base + 1].map((n) => `/dev/ttyUSB${n}`),
      });
      expect(d.wdm, `usbnet ${usbnet}`).toBe(e?.wdm);
    }
  });

  it('a late qmi_wwan bind and a udev rename are device.changed events', async () => {
    await sys.plug({ usbPath: '1-1.2', netBound: false, net: 'wwan0', wdm: 'cdc-wdm0' });
    const batches: DetectionEvent[][] = [];
    const detector = new Detector({
      scan: { sysRoot: sys.root, devRoot: '/dev' },
      source: new SysfsWatchSource(sys.root),
      onEvents: (e) => batches.push(e),
      debounceMs: 30,
    });
    await detector.start();
    try {
      const [first] = detector.present;
      // the ttys are there, the net function is not yet: usable, no fault, no mode yet
      expect(first).toMatchObject({ ports: { at: '/dev/ttyUSB2' }, usbnet: null });
      expect(first?.net).toBeUndefined();
      expect(first?.fault).toBeUndefined();

      await sys.bindNet('1-1.2');
      await until(() => detector.present[0]?.net === 'wwan0', soon);
      expect(batches.at(-1)).toEqual([
        expect.objectContaining({
          type: 'device.changed',
          device: expect.objectContaining({ net: 'wwan0', netDriver: 'qmi_wwan', usbnet: 0 }) as unknown,
        }),
      ]);

      await sys.renameNet('1-1.2', 'wwp0s20u1i4');
      await until(() => detector.present[0]?.net === 'wwp0s20u1i4', soon);
      const last = batches.at(-1)?.[0];
      expect(last?.type).toBe('device.changed');
      if (last?.type === 'device.changed') {
        expect(last.previous.net).toBe('wwan0');
        expect(last.device.ports.at).toBe(last.previous.ports.at);
      }
    } finally {
      await detector.stop();
    }
  });

  it('an unconfigured device (controller out of resources) is a fault naming the controller', async () => {
    await sys.plug({ usbPath: '1-1.5', unconfigured: true });
    await sys.plug({ usbPath: '1-1.6', netBound: false });
    const [bad, late] = await scanUsbModems({ sysRoot: sys.root, devRoot: '/dev' });
    expect(bad).toMatchObject({
      usbPath: '1-1.5',
      model: 'EC25',
      faultCode: 'usb_resources',
      controller: '0000:00:14.0',
      atCandidates: [],
      usbnet: null,
    });
    expect(bad?.fault).toContain('0000:00:14.0');
    expect(bad?.fault).toMatch(/bandwidth/);
    expect(bad?.ports.at).toBeUndefined();
    // configured, net function not bound yet: the normal late qmi_wwan bind, not a fault
    expect(late?.fault).toBeUndefined();
    expect(late?.faultCode).toBeUndefined();
  });

  it('reports plugs and unplugs from the watched tree in batches', async () => {
    await sys.plug({ usbPath: '1-1.2' });
    const batches: DetectionEvent[][] = [];
    const detector = new Detector({
      scan: { sysRoot: sys.root, devRoot: '/dev' },
      source: new SysfsWatchSource(sys.root),
      onEvents: (e) => batches.push(e),
      debounceMs: 30,
    });
    await detector.start();
    try {
      expect(
        batches.map((b) =>
          b.map((e) => [e.type, e.type === 'device.removed' ? e.usbPath : e.device.usbPath]),
        ),
      ).toEqual([[['device.added', '1-1.2']]]);
      await Promise.all(
        ['1-2.1', '1-2.2', '1-2.3'].map((usbPath, i) =>
          sys.plug({ usbPath, ttys: [10 + 4 * i, 11 + 4 * i, 12 + 4 * i, 13 + 4 * i] }),
        ),
      );
      await until(() => detector.present.length === 4, soon);
      const added = batches.slice(1).flat();
      expect(added.map((e) => e.type)).toEqual(['device.added', 'device.added', 'device.added']);
      await sys.unplug('1-1.2');
      await until(() => detector.present.length === 3, soon);
      expect(batches.at(-1)).toEqual([expect.objectContaining({ type: 'device.removed', usbPath: '1-1.2' })]);
    } finally {
      await detector.stop();
    }
  });
});
