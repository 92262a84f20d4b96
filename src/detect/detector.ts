import { silentLogger, type Logger } from '../log.js';
import { coerceError } from '../util/errors.js';
import type { HotplugSource } from './hotplugSources.js';
import { DEFAULT_SCAN, scanUsbDevice, scanUsbModems, usbPathOf, type ScanOptions } from './sysfsScan.js';
import type { DetectionEvent, DeviceDescriptor } from './types.js';

export interface DetectorOptions {
  scan?: ScanOptions;
  source?: HotplugSource;
  /** Called with every batch of changes (the first batch is the initial scan). */
  onEvents: (events: DetectionEvent[]) => void;
  /** Hotplug events arriving within this window are handled together. */
  debounceMs?: number;
  /**
   * A full rescan at this interval catches anything a lost event missed: 5 minutes with a hotplug
   * source, 30 s without. (A rescan reads ~25 sysfs files per device: every 30 s it was most of an
   * idle farm's CPU; a vanished tty is noticed by each modem's presence check within a second.)
   */
  rescanIntervalMs?: number;
  log?: Logger;
}

const same = (a: DeviceDescriptor, b: DeviceDescriptor): boolean => JSON.stringify(a) === JSON.stringify(b);

/**
 * Keeps the set of present modems in step with sysfs: an initial scan, then hotplug events
 * (debounced, per USB path) and a periodic full rescan, all reported as diffs in batches.
 */
export class Detector {
  private readonly devices = new Map<string, DeviceDescriptor>();
  private readonly dirty = new Set<string>();
  private fullRescan = false;
  private timer: NodeJS.Timeout | undefined;
  private interval: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private readonly log: Logger;

  constructor(private readonly options: DetectorOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'detect' });
  }

  get present(): DeviceDescriptor[] {
    return [...this.devices.values()];
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.options.source?.start((event) => {
      const usbPath = usbPathOf(event.devpath);
      if (usbPath) this.dirty.add(usbPath);
      else this.fullRescan = true;
      this.schedule();
    });
    await this.rescan(true);
    const every = this.options.rescanIntervalMs ?? (this.options.source ? 300_000 : 30_000);
    this.interval = setInterval(() => {
      this.fullRescan = true;
      this.schedule();
    }, every);
    this.interval.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.interval);
    await this.options.source?.stop();
    await this.running;
  }

  /** Rescan now (tests, and the supervisor after a reset re-enumeration). */
  async refresh(): Promise<void> {
    this.fullRescan = true;
    await this.flush();
  }

  private schedule(): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, this.options.debounceMs ?? 50);
  }

  private async flush(): Promise<void> {
    while (this.running) await this.running;
    const full = this.fullRescan;
    this.fullRescan = false;
    const paths = [...this.dirty];
    this.dirty.clear();
    this.running = this.rescan(full, paths)
      .catch((err: unknown) => this.log.error({ err: coerceError(err) }, 'sysfs scan failed'))
      .finally(() => {
        this.running = undefined;
      });
    await this.running;
  }

  private async rescan(full: boolean, paths: string[] = []): Promise<void> {
    const scan = this.options.scan ?? DEFAULT_SCAN;
    const found = new Map<string, DeviceDescriptor | undefined>();
    if (full) {
      for (const d of await scanUsbModems(scan)) found.set(d.usbPath, d);
      for (const known of this.devices.keys()) if (!found.has(known)) found.set(known, undefined);
    } else {
      for (const p of paths) found.set(p, await scanUsbDevice(scan, p));
    }
    const events: DetectionEvent[] = [];
    for (const [usbPath, device] of found) {
      const previous = this.devices.get(usbPath);
      if (device && !previous) events.push({ type: 'device.added', device });
      else if (!device && previous) events.push({ type: 'device.removed', usbPath, previous });
      else if (device && previous && !same(device, previous))
        events.push({ type: 'device.changed', device, previous });
      if (device) this.devices.set(usbPath, device);
      else this.devices.delete(usbPath);
    }
    if (events.length > 0 && !this.stopped) {
      this.log.info(
        {
          added: events.filter((e) => e.type === 'device.added').length,
          removed: events.filter((e) => e.type === 'device.removed').length,
        },
        'devices changed',
      );
      this.options.onEvents(events);
    }
  }
}
