import { watch, type FSWatcher } from 'node:fs';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { spawnChild, type Child } from '../process/run.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay } from '../util/time.js';
import { UdevParser, formatUdevEvent, type HotplugEvent } from './udevMonitor.js';

export interface HotplugSource {
  start(onEvent: (event: HotplugEvent) => void): Promise<void>;
  stop(): Promise<void>;
}

/** Production: `udevadm monitor --udev --property`, restarted with backoff if it exits. */
export class UdevadmSource implements HotplugSource {
  private child: Child | undefined;
  private stopped = true;
  private restarts = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;
  private readonly command: string;

  constructor(options: { log?: Logger; command?: string } = {}) {
    this.log = (options.log ?? silentLogger).child({ component: 'udevadm' });
    this.command = options.command ?? 'udevadm';
  }

  start(onEvent: (event: HotplugEvent) => void): Promise<void> {
    this.stopped = false;
    const spawn = (): void => {
      const parser = new UdevParser();
      const child = spawnChild(
        this.command,
        [
          'monitor',
          '--udev',
          '--property',
          '--subsystem-match=usb',
          '--subsystem-match=tty',
          '--subsystem-match=net',
          '--subsystem-match=usbmisc',
        ],
        { stdout: 'pipe' },
      );
      this.child = child;
      child.stdout?.setEncoding('utf8');
      child.stdout?.on('data', (chunk: string) => {
        for (const event of parser.push(chunk)) onEvent(event);
      });
      void child.then((result) => {
        if (this.stopped) return;
        const delay = backoffDelay(this.restarts++, 500, 30_000);
        this.log.warn({ exitCode: result.exitCode, delayMs: delay }, 'udevadm monitor exited; restarting');
        this.timer = setTimeout(spawn, delay);
      });
    };
    spawn();
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.child?.kill('SIGTERM');
    await this.child?.catch((err: unknown) => this.log.debug({ err: coerceError(err) }, 'udevadm stopped'));
  }
}

/**
 * The lab: a watch on a fake sysfs tree's `bus/usb/devices`. Each change is rendered as a udev
 * record and parsed by the same parser as udevadm's output.
 */
export class SysfsWatchSource implements HotplugSource {
  private watcher: FSWatcher | undefined;
  constructor(private readonly sysRoot: string) {}

  start(onEvent: (event: HotplugEvent) => void): Promise<void> {
    const parser = new UdevParser();
    this.watcher = watch(join(this.sysRoot, 'bus', 'usb', 'devices'), (_type, filename) => {
      if (!filename) return;
      const text = formatUdevEvent({
        action: 'change',
        devpath: `/bus/usb/devices/${filename}`,
        subsystem: 'usb',
        devname: null,
      });
      for (const event of parser.push(text)) onEvent(event);
    });
    return Promise.resolve();
  }

  stop(): Promise<void> {
    this.watcher?.close();
    return Promise.resolve();
  }
}
