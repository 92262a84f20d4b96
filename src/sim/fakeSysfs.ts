import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';

/** What the lab plugs in: one USB modem's sysfs entries. */
export interface FakeUsbModem {
  usbPath: string;
  vid?: string;
  pid?: string;
  /** Old EC25 firmware reports `Android` / `Android` / `0`: by-id names collide between modems. */
  manufacturer?: string;
  product?: string;
  serial?: string;
  /** ttyUSB numbers of interfaces 0..3 (DIAG, NMEA, AT, modem). */
  ttys?: [number, number, number, number];
  net?: string;
  wdm?: string;
}

/**
 * A fake sysfs tree laid out like the kernel's (`devices/.../1-1.3/1-1.3:1.2/ttyUSB2`,
 * `bus/usb/devices/1-1.3` as a symlink), so detection runs the same code on it as on /sys.
 */
export class FakeSysfs {
  constructor(readonly root: string) {}

  private deviceDir(usbPath: string): string {
    return join(this.root, 'devices', 'pci0000:00', '0000:00:14.0', `usb${usbPath.split('-')[0]}`, usbPath);
  }

  async start(): Promise<void> {
    await mkdir(join(this.root, 'bus', 'usb', 'devices'), { recursive: true });
  }

  async plug(m: FakeUsbModem): Promise<void> {
    const dir = this.deviceDir(m.usbPath);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'idVendor'), `${m.vid ?? '2c7c'}\n`);
    await writeFile(join(dir, 'idProduct'), `${m.pid ?? '0125'}\n`);
    await writeFile(join(dir, 'manufacturer'), `${m.manufacturer ?? 'Android'}\n`);
    await writeFile(join(dir, 'product'), `${m.product ?? 'Android'}\n`);
    await writeFile(join(dir, 'serial'), `${m.serial ?? '0'}\n`);
    const ttys = m.ttys ?? [0, 1, 2, 3];
    for (let n = 0; n <= 4; n++) {
      const ifDir = join(dir, `${m.usbPath}:1.${n}`);
      await mkdir(ifDir, { recursive: true });
      await writeFile(join(ifDir, 'bInterfaceNumber'), `${n.toString(16).padStart(2, '0')}\n`);
      const tty = ttys[n];
      if (n < 4 && tty !== undefined)
        await mkdir(join(ifDir, `ttyUSB${tty}`, 'tty', `ttyUSB${tty}`), { recursive: true });
      if (n === 4) {
        if (m.net) await mkdir(join(ifDir, 'net', m.net), { recursive: true });
        if (m.wdm) await mkdir(join(ifDir, 'usbmisc', m.wdm), { recursive: true });
      }
    }
    // the bus link appears last, as the kernel's uevent comes after the device is complete
    const link = join(this.root, 'bus', 'usb', 'devices', m.usbPath);
    await symlink(relative(join(this.root, 'bus', 'usb', 'devices'), dir), link);
  }

  async unplug(usbPath: string): Promise<void> {
    await rm(join(this.root, 'bus', 'usb', 'devices', usbPath), { force: true });
    await rm(this.deviceDir(usbPath), { recursive: true, force: true });
  }

  async stop(): Promise<void> {
    await rm(this.root, { recursive: true, force: true });
  }
}
