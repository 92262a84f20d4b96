import { readFile, readdir, readlink, realpath } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { NET_DRIVERS, SERIAL_DRIVERS, findModel, type SerialFunction } from './models.js';
import type { DeviceDescriptor } from './types.js';

export interface ScanOptions {
  /** sysfs mount point: `/sys` in production, a fake tree in the lab. */
  sysRoot: string;
  /** Where device nodes live: `/dev` in production. */
  devRoot: string;
}

export const DEFAULT_SCAN: ScanOptions = { sysRoot: '/sys', devRoot: '/dev' };

/** USB device directories are named like `1-1.3` (bus-port.port...); interfaces `1-1.3:1.2`. */
export const USB_PATH_PATTERN = /^\d+-\d+(\.\d+)*$/;
const TTY_PATTERN = /^tty(USB|ACM)\d+$/;
const NET_PATTERN = /^[A-Za-z0-9._-]{1,15}$/;
const WDM_PATTERN = /^cdc-wdm\d+$/;

async function readText(path: string): Promise<string | null> {
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch {
    return null;
  }
}

async function list(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch {
    return [];
  }
}

/** USB strings are device text: printable ASCII only, bounded. */
export function deviceString(value: string | null): string | null {
  if (value === null) return null;
  const clean = value.replace(/[^\x20-\x7e]/g, '').slice(0, 64);
  return clean.length > 0 ? clean : null;
}

/** One USB interface directory (`1-1.3:1.2`) and the driver bound to it, if any. */
interface UsbInterface {
  number: number;
  dir: string;
  /** Basename of the `driver` symlink: `option`, `qmi_wwan`, ...; null while unbound. */
  driver: string | null;
}

async function driverOf(dir: string): Promise<string | null> {
  try {
    return basename(await readlink(join(dir, 'driver')));
  } catch {
    return null;
  }
}

async function interfacesOf(sysPath: string, usbPath: string): Promise<UsbInterface[]> {
  const prefix = `${usbPath}:`;
  const found: UsbInterface[] = [];
  for (const entry of (await list(sysPath)).filter((e) => e.startsWith(prefix))) {
    const dir = join(sysPath, entry);
    const number = Number.parseInt((await readText(join(dir, 'bInterfaceNumber'))) ?? '', 16);
    if (!Number.isInteger(number)) continue;
    found.push({ number, dir, driver: await driverOf(dir) });
  }
  return found.sort((a, b) => a.number - b.number);
}

/**
 * The host controller a USB device hangs off: the directory above `usbN` in its sysfs path, a PCI
 * address like `0000:00:14.0` on a PC (`/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.3`).
 */
export function controllerOf(sysPath: string): string | undefined {
  const parts = sysPath.split('/');
  const bus = parts.findIndex((p) => /^usb\d+$/.test(p));
  return bus > 0 ? parts[bus - 1] : undefined;
}

async function ttyOf(dir: string): Promise<string | undefined> {
  return (
    (await list(dir)).find((c) => TTY_PATTERN.test(c)) ??
    (await list(join(dir, 'tty'))).find((c) => TTY_PATTERN.test(c))
  );
}

/**
 * A device whose configuration failed: the kernel read its descriptors (so idVendor/idProduct are
 * there) but `usb_set_configuration` was refused, typically by the xHCI controller running out of
 * endpoints or bandwidth ("Not enough bandwidth for new device state", "no room for endpoint"
 * in the kernel log; roughly 4-6 EC25s per Intel controller): bConfigurationValue is empty and no
 * interface exists. The kernel configures a device inside the probe that follows `device_add`,
 * before udev announces it, so an unconfigured device at scan time is not a step of a normal plug.
 * A configured device with fewer interfaces bound than it has is normal for a moment (qmi_wwan
 * binds after the ttys): it is reported as it is and completed by the next scan, not as a fault.
 */
async function unconfigured(sysPath: string, interfaces: readonly UsbInterface[]): Promise<boolean> {
  if (interfaces.length > 0) return false;
  return (await readText(join(sysPath, 'bConfigurationValue'))) === '';
}

/** One USB device by its port path; undefined when absent or not a modem we know. */
export async function scanUsbDevice(
  options: ScanOptions,
  usbPath: string,
): Promise<DeviceDescriptor | undefined> {
  if (!USB_PATH_PATTERN.test(usbPath)) return undefined;
  let sysPath: string;
  try {
    sysPath = await realpath(join(options.sysRoot, 'bus', 'usb', 'devices', usbPath));
  } catch {
    return undefined;
  }
  const vid = await readText(join(sysPath, 'idVendor'));
  const pid = await readText(join(sysPath, 'idProduct'));
  if (!vid || !pid) return undefined;
  const model = findModel(vid, pid);
  if (!model) return undefined;
  const controller = controllerOf(sysPath);

  const device: DeviceDescriptor = {
    usbPath,
    sysPath,
    ...(controller ? { controller } : {}),
    vid: model.vid,
    pid: model.pid,
    vendor: model.vendor,
    model: model.model,
    ...(model.fault ? { fault: model.fault, faultCode: model.faultCode ?? 'emergency_download' } : {}),
    usb: {
      manufacturer: deviceString(await readText(join(sysPath, 'manufacturer'))),
      product: deviceString(await readText(join(sysPath, 'product'))),
      serial: deviceString(await readText(join(sysPath, 'serial'))),
    },
    ports: {},
    atCandidates: [],
    usbnet: null,
  };
  const interfaces = await interfacesOf(sysPath, usbPath);
  if (!device.fault && (await unconfigured(sysPath, interfaces))) {
    device.fault =
      `USB device ${model.vid}:${model.pid} at ${usbPath} was not configured: its host controller ` +
      `${controller ?? '(unknown)'} is out of endpoints or bandwidth (kernel: "Not enough bandwidth ` +
      'for new device state"); move modems to another controller (e.g. a PCIe USB card) or unplug one';
    device.faultCode = 'usb_resources';
  }

  // serial functions: the interfaces bound to option, in interface order (whatever their numbers)
  const ttys: { fn: SerialFunction | undefined; path: string }[] = [];
  let ordinal = 0;
  for (const iface of interfaces) {
    if (!iface.driver || !SERIAL_DRIVERS.has(iface.driver)) continue;
    const fn = model.serial[ordinal++];
    const tty = await ttyOf(iface.dir);
    if (!tty) continue;
    const path = join(options.devRoot, tty);
    ttys.push({ fn, path });
    if (fn) device.ports[fn] = path;
  }
  for (const fn of model.atPreference) {
    const path = device.ports[fn];
    if (path) device.atCandidates.push(path);
  }
  for (const t of ttys) if (!device.atCandidates.includes(t.path)) device.atCandidates.push(t.path);
  const at = device.atCandidates[0];
  if (at) device.ports.at = at;

  // the net function: the first interface bound to a network driver that has a net device
  const bound = interfaces.filter((i) => i.driver && NET_DRIVERS.has(i.driver));
  for (const iface of bound) {
    const net = (await list(join(iface.dir, 'net'))).find((n) => NET_PATTERN.test(n));
    const wdm = [...(await list(join(iface.dir, 'usbmisc'))), ...(await list(join(iface.dir, 'usb')))].find(
      (n) => WDM_PATTERN.test(n),
    );
    if (wdm && !device.wdm) device.wdm = join(options.devRoot, wdm);
    if (net && !device.net) {
      device.net = net;
      device.netDriver = iface.driver ?? undefined;
    }
  }
  const driver = device.netDriver ?? bound[0]?.driver ?? undefined;
  if (driver) {
    device.netDriver = driver;
    device.usbnet = NET_DRIVERS.get(driver) ?? null;
  }
  return device;
}

/** Every known USB modem under the sysfs root, ordered by USB path. */
export async function scanUsbModems(options: ScanOptions = DEFAULT_SCAN): Promise<DeviceDescriptor[]> {
  const names = (await list(join(options.sysRoot, 'bus', 'usb', 'devices'))).filter((n) =>
    USB_PATH_PATTERN.test(n),
  );
  const found = await Promise.all(names.map((n) => scanUsbDevice(options, n)));
  return found
    .filter((d): d is DeviceDescriptor => d !== undefined)
    .sort((a, b) => a.usbPath.localeCompare(b.usbPath, 'en', { numeric: true }));
}

/** The USB device path a sysfs devpath belongs to, e.g. `/devices/.../1-1.3/1-1.3:1.2/ttyUSB2` → `1-1.3`. */
export function usbPathOf(devpath: string): string | undefined {
  const parts = devpath.split('/');
  for (let i = parts.length - 1; i >= 0; i--) {
    const p = parts[i] ?? '';
    if (USB_PATH_PATTERN.test(p)) return p;
    const iface = /^(\d+-\d+(?:\.\d+)*):\d+\.\d+$/.exec(p);
    if (iface) return iface[1];
  }
  return undefined;
}
