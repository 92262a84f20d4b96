import { readFile, readdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { findModel } from './models.js';
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

  const device: DeviceDescriptor = {
    usbPath,
    sysPath,
    vid: model.vid,
    pid: model.pid,
    vendor: model.vendor,
    model: model.model,
    ...(model.fault ? { fault: model.fault } : {}),
    usb: {
      manufacturer: deviceString(await readText(join(sysPath, 'manufacturer'))),
      product: deviceString(await readText(join(sysPath, 'product'))),
      serial: deviceString(await readText(join(sysPath, 'serial'))),
    },
    ports: {},
  };
  const functionOf = new Map<number, keyof DeviceDescriptor['ports'] | 'net'>();
  for (const [fn, number] of Object.entries(model.interfaces))
    functionOf.set(number, fn as keyof DeviceDescriptor['ports']);

  const prefix = `${usbPath}:`;
  for (const entry of (await list(sysPath)).filter((e) => e.startsWith(prefix)).sort()) {
    const ifDir = join(sysPath, entry);
    const number = Number.parseInt((await readText(join(ifDir, 'bInterfaceNumber'))) ?? '', 16);
    if (!Number.isInteger(number)) continue;
    const fn = functionOf.get(number);
    if (!fn) continue;
    const children = await list(ifDir);
    if (fn === 'net') {
      const net = (await list(join(ifDir, 'net'))).find((n) => NET_PATTERN.test(n));
      if (net) device.net = net;
      const wdm = [...(await list(join(ifDir, 'usbmisc'))), ...(await list(join(ifDir, 'usb')))].find((n) =>
        WDM_PATTERN.test(n),
      );
      if (wdm) device.wdm = join(options.devRoot, wdm);
      continue;
    }
    const tty =
      children.find((c) => TTY_PATTERN.test(c)) ??
      (await list(join(ifDir, 'tty'))).find((c) => TTY_PATTERN.test(c));
    if (tty) device.ports[fn] = join(options.devRoot, tty);
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
