import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { SysfsWatchSource } from '../detect/hotplugSources.js';
import type { ScanOptions } from '../detect/sysfsScan.js';
import { silentLogger, type Logger } from '../log.js';
import type { SimProfile, UsbNet } from './ec25Model.js';
import { FakeSysfs, type FakeUsbModem } from './fakeSysfs.js';
import { SimModem } from './simModem.js';
import { openMemoryPort } from './simWire.js';
import type { PortLike } from '../at/atTransport.js';

export interface SimLabOptions {
  /** Everything lives under it: `sys/` (a fake sysfs tree) and `dev/` (the PTY links). */
  dir: string;
  profiles: SimProfile[];
  /** Real PTYs (default) or in-process ports (the supervisor then needs `link.openPort`). */
  wire?: 'pty' | 'memory';
  log?: Logger;
  random?: () => number;
}

/**
 * A farm on one machine without hardware: each simulated EC25 is a USB device in a fake sysfs
 * tree (at `1-1.<n>`, every one with the by-id strings of old firmware, `Android`/`Android`/`0`)
 * whose AT interface is a real PTY. Plug and unplug change both, as the kernel would.
 */
export class SimLab {
  readonly sysfs: FakeSysfs;
  readonly modems: SimModem[];
  private readonly devDir: string;
  /** The usbnet mode each plugged modem's sysfs entries were laid out for. */
  private readonly laidOut: (UsbNet | undefined)[] = [];

  constructor(private readonly options: SimLabOptions) {
    this.sysfs = new FakeSysfs(join(options.dir, 'sys'));
    this.devDir = join(options.dir, 'dev');
    this.modems = options.profiles.map(
      (profile, i) =>
        new SimModem({
          profile,
          dir: this.devDir,
          name: `ttyUSB${4 * i + 2}`,
          wire: options.wire ?? 'pty',
          log: options.log ?? silentLogger,
          ...(options.random ? { random: options.random } : {}),
        }),
    );
    // a reset that changed usbnet re-enumerates with another interface layout
    this.modems.forEach((modem, i) =>
      modem.onEvent((event) => {
        const was = this.laidOut[i];
        if (event.type !== 'plugged' || was === undefined || was === modem.usbnet) return;
        void this.layOut(i).catch((err: unknown) =>
          (options.log ?? silentLogger).warn({ err }, 'sim lab: sysfs re-layout failed'),
        );
      }),
    );
  }

  get scan(): ScanOptions {
    return { sysRoot: this.sysfs.root, devRoot: this.devDir };
  }

  /** Hotplug events from the fake tree, parsed like udevadm's. */
  hotplug(): SysfsWatchSource {
    return new SysfsWatchSource(this.sysfs.root);
  }

  /** The supervisor's `link.openPort` for in-process ports (undefined with real PTYs). */
  get openPort(): ((path: string) => Promise<PortLike>) | undefined {
    return this.options.wire === 'memory' ? openMemoryPort : undefined;
  }

  usbPath(i: number): string {
    return `1-1.${i + 1}`;
  }

  async start(plugged = true): Promise<void> {
    await mkdir(this.devDir, { recursive: true });
    await this.sysfs.start();
    if (plugged) await Promise.all(this.modems.map((_, i) => this.plug(i)));
  }

  /** The tty appears first, then the USB device in sysfs (what detection reacts to). */
  async plug(i: number): Promise<void> {
    const modem = this.modem(i);
    await modem.start();
    await this.sysfs.plug(this.layout(i));
    this.laidOut[i] = modem.usbnet;
  }

  /**
   * Modem i's USB interfaces for its usbnet mode (docs/ec25.md §1): QMI (0) and MBIM
   * (2) have `wwan<i>` and `cdc-wdm<i>`; ECM (1) and RNDIS (3) an Ethernet-like `usb<i>` and no
   * control device.
   */
  layout(i: number): FakeUsbModem {
    const usbnet = this.modem(i).usbnet;
    const qmiLike = usbnet === 0 || usbnet === 2;
    return {
      usbPath: this.usbPath(i),
      usbnet,
      ttys: [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3],
      net: qmiLike ? `wwan${i}` : `usb${i}`,
      ...(qmiLike ? { wdm: `cdc-wdm${i}` } : {}),
    };
  }

  private async layOut(i: number): Promise<void> {
    await this.sysfs.unplug(this.usbPath(i));
    await this.sysfs.plug(this.layout(i));
    this.laidOut[i] = this.modem(i).usbnet;
  }

  async unplug(i: number): Promise<void> {
    this.laidOut[i] = undefined;
    await this.sysfs.unplug(this.usbPath(i));
    await this.modem(i).unplug();
  }

  modem(i: number): SimModem {
    const m = this.modems[i];
    if (!m) throw new Error(`no simulated modem ${i}`);
    return m;
  }

  async stop(): Promise<void> {
    await Promise.allSettled(this.modems.map((m) => m.stop()));
    await rm(this.options.dir, { recursive: true, force: true });
  }
}
