import { mkdir, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** `AT+QCFG="usbnet"`: 0 QMI (default), 1 ECM, 2 MBIM, 3 RNDIS. */
export type FakeUsbNet = 0 | 1 | 2 | 3;

/** What the lab plugs in: one USB modem's sysfs entries. */
export interface FakeUsbModem {
  usbPath: string;
  vid?: string;
  pid?: string;
  /** Old EC25 firmware reports `Android` / `Android` / `0`: by-id names collide between modems. */
  manufacturer?: string;
  product?: string;
  serial?: string;
  /** ttyUSB numbers of the four serial functions in order (DIAG, NMEA, AT, modem). */
  ttys?: [number, number, number, number];
  /** Name of the net interface (none when unset: the driver is bound without a net device). */
  net?: string;
  /** cdc-wdm control device of the net function (QMI and MBIM). */
  wdm?: string;
  /** The interface layout of this `AT+QCFG="usbnet"` mode (see src/detect/models.ts). Default 0. */
  usbnet?: FakeUsbNet;
  /** false: plug with the net function's driver not yet bound (qmi_wwan binds late); see bindNet. */
  netBound?: boolean;
  /**
   * The host controller refused the configuration (out of endpoints/bandwidth): the device is there
   * with empty bConfigurationValue and bNumInterfaces and no interface.
   */
  unconfigured?: boolean;
}

interface Layout {
  /** Driver of each interface, if00 first. */
  drivers: string[];
  /** Interface numbers of the serial functions (DIAG, NMEA, AT, modem). */
  serial: number[];
  /** Interface that carries the net device (and cdc-wdm). */
  net: number;
}

const LAYOUTS: Record<FakeUsbNet, Layout> = {
  0: { drivers: ['option', 'option', 'option', 'option', 'qmi_wwan'], serial: [0, 1, 2, 3], net: 4 },
  1: {
    drivers: ['option', 'option', 'option', 'option', 'cdc_ether', 'cdc_ether'],
    serial: [0, 1, 2, 3],
    net: 4,
  },
  2: {
    drivers: ['option', 'option', 'option', 'option', 'cdc_mbim', 'cdc_mbim'],
    serial: [0, 1, 2, 3],
    net: 4,
  },
  3: {
    drivers: ['rndis_host', 'rndis_host', 'option', 'option', 'option', 'option'],
    serial: [2, 3, 4, 5],
    net: 0,
  },
};

const hex2 = (n: number): string => n.toString(16).padStart(2, '0');

/**
 * A fake sysfs tree laid out like the kernel's (`devices/.../1-1.3/1-1.3:1.2/ttyUSB2`,
 * `bus/usb/devices/1-1.3` as a symlink, each bound interface's `driver` a symlink to
 * `bus/usb/drivers/<name>`), so detection runs the same code on it as on /sys.
 */
export class FakeSysfs {
  private readonly plugged = new Map<string, FakeUsbModem>();

  constructor(readonly root: string) {}

  /** The controller is the PCI function `0000:00:14.0` (an Intel xHCI's usual address). */
  deviceDir(usbPath: string): string {
    return join(this.root, 'devices', 'pci0000:00', '0000:00:14.0', `usb${usbPath.split('-')[0]}`, usbPath);
  }

  private busLink(usbPath: string): string {
    return join(this.root, 'bus', 'usb', 'devices', usbPath);
  }

  async start(): Promise<void> {
    await mkdir(join(this.root, 'bus', 'usb', 'devices'), { recursive: true });
    await mkdir(join(this.root, 'bus', 'usb', 'drivers'), { recursive: true });
    await mkdir(join(this.root, '.tmp'), { recursive: true });
  }

  private async bindDriver(ifDir: string, driver: string): Promise<void> {
    const target = join(this.root, 'bus', 'usb', 'drivers', driver);
    await mkdir(target, { recursive: true });
    await rm(join(ifDir, 'driver'), { force: true });
    await symlink(relative(ifDir, target), join(ifDir, 'driver'));
  }

  async plug(m: FakeUsbModem): Promise<void> {
    const dir = this.deviceDir(m.usbPath);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'idVendor'), `${m.vid ?? '2c7c'}\n`);
    await writeFile(join(dir, 'idProduct'), `${m.pid ?? '0125'}\n`);
    await writeFile(join(dir, 'manufacturer'), `${m.manufacturer ?? 'Android'}\n`);
    await writeFile(join(dir, 'product'), `${m.product ?? 'Android'}\n`);
    await writeFile(join(dir, 'serial'), `${m.serial ?? '0'}\n`);
    await writeFile(join(dir, 'authorized'), '1\n');
    const layout = LAYOUTS[m.usbnet ?? 0];
    if (m.unconfigured) {
      await writeFile(join(dir, 'bConfigurationValue'), '\n');
      await writeFile(join(dir, 'bNumInterfaces'), '\n');
    } else {
      await writeFile(join(dir, 'bConfigurationValue'), '1\n');
      await writeFile(join(dir, 'bNumInterfaces'), `${String(layout.drivers.length).padStart(2)}\n`);
      const ttys = m.ttys ?? [0, 1, 2, 3];
      for (const [n, driver] of layout.drivers.entries()) {
        const ifDir = join(dir, `${m.usbPath}:1.${n}`);
        await mkdir(ifDir, { recursive: true });
        await writeFile(join(ifDir, 'bInterfaceNumber'), `${hex2(n)}\n`);
        const fn = layout.serial.indexOf(n);
        if (fn >= 0) {
          await this.bindDriver(ifDir, driver);
          const tty = ttys[fn];
          if (tty !== undefined)
            await mkdir(join(ifDir, `ttyUSB${tty}`, 'tty', `ttyUSB${tty}`), { recursive: true });
        }
      }
      if (m.netBound !== false) await this.bindNetFunction(m);
    }
    this.plugged.set(m.usbPath, m);
    // the bus link appears last, as the kernel's uevent comes after the device is complete
    await symlink(relative(join(this.root, 'bus', 'usb', 'devices'), dir), this.busLink(m.usbPath));
  }

  private async bindNetFunction(m: FakeUsbModem): Promise<void> {
    const layout = LAYOUTS[m.usbnet ?? 0];
    const dir = this.deviceDir(m.usbPath);
    for (const [n, driver] of layout.drivers.entries()) {
      if (layout.serial.includes(n)) continue;
      const ifDir = join(dir, `${m.usbPath}:1.${n}`);
      await this.bindDriver(ifDir, driver);
      if (n !== layout.net) continue;
      if (m.net) await mkdir(join(ifDir, 'net', m.net), { recursive: true });
      if (m.wdm) await mkdir(join(ifDir, 'usbmisc', m.wdm), { recursive: true });
    }
  }

  /** The net function's driver binds now (a modem plugged with `netBound: false`). */
  async bindNet(usbPath: string): Promise<void> {
    const m = this.known(usbPath);
    await this.bindNetFunction(m);
    this.plugged.set(usbPath, { ...m, netBound: true });
    await this.announce(usbPath);
  }

  /** udev renames the net interface (e.g. `wwan0` → `wwp0s20u1i4`). */
  async renameNet(usbPath: string, newName: string): Promise<void> {
    const m = this.known(usbPath);
    if (!m.net) throw new Error(`${usbPath} has no net interface to rename`);
    const netDir = join(this.deviceDir(usbPath), `${usbPath}:1.${LAYOUTS[m.usbnet ?? 0].net}`, 'net');
    await rename(join(netDir, m.net), join(netDir, newName));
    this.plugged.set(usbPath, { ...m, net: newName });
    await this.announce(usbPath);
  }

  private known(usbPath: string): FakeUsbModem {
    const m = this.plugged.get(usbPath);
    if (!m) throw new Error(`no fake USB device at ${usbPath}`);
    return m;
  }

  /**
   * A uevent for the lab's watch source (it watches `bus/usb/devices`): the bus link is replaced
   * atomically, so a scanner never finds it missing.
   */
  private async announce(usbPath: string): Promise<void> {
    const tmp = join(this.root, '.tmp', usbPath);
    await rm(tmp, { force: true });
    await symlink(relative(join(this.root, 'bus', 'usb', 'devices'), this.deviceDir(usbPath)), tmp);
    await rename(tmp, this.busLink(usbPath));
  }

  async unplug(usbPath: string): Promise<void> {
    this.plugged.delete(usbPath);
    await rm(this.busLink(usbPath), { force: true });
    await rm(this.deviceDir(usbPath), { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}
