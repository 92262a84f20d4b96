/**
 * Hotplug events in the shape of `udevadm monitor --udev --property`: a header line, KEY=value
 * lines, a blank line. Production reads them from udevadm; the lab's fake-sysfs watcher produces
 * the same records, so both go through one parsing and handling path.
 */
export interface HotplugEvent {
  action: string;
  devpath: string;
  subsystem: string | null;
  devname: string | null;
}

const MAX_BUFFER = 64 * 1024;
const MAX_LINE = 4096;

/** Incremental parser: feed chunks, get complete events. Bounded: oversized input is dropped. */
export class UdevParser {
  private buffer = '';
  private current = new Map<string, string>();

  push(chunk: string): HotplugEvent[] {
    this.buffer += chunk;
    if (this.buffer.length > MAX_BUFFER) this.buffer = this.buffer.slice(-MAX_BUFFER);
    const events: HotplugEvent[] = [];
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).replace(/\r$/, '');
      this.buffer = this.buffer.slice(nl + 1);
      if (line.length > MAX_LINE) continue;
      if (line.trim() === '') {
        const event = this.finish();
        if (event) events.push(event);
        continue;
      }
      const eq = line.indexOf('=');
      if (eq > 0 && /^[A-Z0-9_]+$/.test(line.slice(0, eq)))
        this.current.set(line.slice(0, eq), line.slice(eq + 1));
      // header lines ("UDEV  [123.4] add /devices/... (tty)", "monitor will print ...") carry nothing new
    }
    return events;
  }

  private finish(): HotplugEvent | undefined {
    const props = this.current;
    this.current = new Map();
    const action = props.get('ACTION');
    const devpath = props.get('DEVPATH');
    if (!action || !devpath) return undefined;
    return {
      action,
      devpath,
      subsystem: props.get('SUBSYSTEM') ?? null,
      devname: props.get('DEVNAME') ?? null,
    };
  }
}

/** Render an event in udevadm's format (used by the lab watcher and by tests). */
export function formatUdevEvent(e: HotplugEvent): string {
  const lines = [
    `UDEV  [0.000000] ${e.action} ${e.devpath} (${e.subsystem ?? 'usb'})`,
    `ACTION=${e.action}`,
    `DEVPATH=${e.devpath}`,
  ];
  if (e.subsystem) lines.push(`SUBSYSTEM=${e.subsystem}`);
  if (e.devname) lines.push(`DEVNAME=${e.devname}`);
  return `${lines.join('\n')}\n\n`;
}
