import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';
import { ip, ipJson } from './ip.js';

/**
 * The host side of a QMI-mode (qmi_wwan) data link: what the kernel exposes for it. Every sysfs
 * write and link change of a modem's net interface goes through this one interface, so the lab can
 * stand in for the kernel (src/sim/lab) with the kernel's rules:
 * - `/sys/class/net/<if>/qmi/raw_ip` is `Y` or `N`; qmi_wwan refuses a write while the link is up
 *   (EBUSY, "Cannot change a running device"); the file is absent on kernels without raw-ip support
 *   (before 4.5) and on links not driven by qmi_wwan; it is reset to `N` when the device re-enumerates.
 * - the EC25 sends raw IP: with `raw_ip` N the link carries nothing usable.
 */
export interface WwanControl {
  /** `raw_ip` of the link: true (Y), false (N), or null when the link has no such setting. */
  rawIp(iface: string): Promise<boolean | null>;
  /** Writes `raw_ip`; rejects with code `link_busy` while the link is up, `raw_ip_unsupported` when absent. */
  setRawIp(iface: string, on: boolean): Promise<void>;
  /** `ip link set <if> up|down`. */
  setLink(iface: string, up: boolean): Promise<void>;
  /** The link is administratively up (`ip link show`: flag UP). */
  linkUp(iface: string): Promise<boolean>;
  /** `ip link set <if> mtu <n>`. */
  setMtu(iface: string, mtu: number): Promise<void>;
}

const IFACE = /^[A-Za-z0-9._-]{1,15}$/;

export function checkIface(iface: string): string {
  if (!IFACE.test(iface) || iface === '.' || iface === '..')
    throw new ModemfleetError('invalid_iface', `invalid interface name '${iface.slice(0, 32)}'`);
  return iface;
}

/**
 * The real kernel: sysfs under `sysRoot` (default /sys) and `ip`. With `netns`, the writes run in
 * that namespace (`ip netns exec` mounts the namespace's own /sys/class/net).
 */
export class SysfsWwanControl implements WwanControl {
  constructor(
    private readonly options: { sysRoot?: string; netns?: string | undefined; ipTimeoutMs?: number } = {},
  ) {}

  private path(iface: string): string {
    return join(this.options.sysRoot ?? '/sys', 'class', 'net', checkIface(iface), 'qmi', 'raw_ip');
  }

  async rawIp(iface: string): Promise<boolean | null> {
    let text: string;
    try {
      text = this.options.netns
        ? await this.inNetns(['cat', this.path(iface)])
        : await readFile(this.path(iface), 'utf8');
    } catch {
      return null;
    }
    return text.trim() === 'Y';
  }

  async setRawIp(iface: string, on: boolean): Promise<void> {
    const value = on ? 'Y' : 'N';
    try {
      if (this.options.netns)
        await this.inNetns(['sh', '-c', 'echo "$1" > "$2"', 'sh', value, this.path(iface)]);
      else await writeFile(this.path(iface), value);
    } catch (err) {
      const text = String((err as { message?: unknown }).message ?? err);
      const code = (err as { code?: unknown }).code;
      if (code === 'EBUSY' || /busy/i.test(text))
        throw new ModemfleetError('link_busy', `${iface}: raw_ip cannot change while the link is up`);
      if (code === 'ENOENT' || /No such file/i.test(text))
        throw new ModemfleetError(
          'raw_ip_unsupported',
          `${iface} has no qmi/raw_ip (not qmi_wwan, or a kernel before 4.5)`,
        );
      throw new ModemfleetError('raw_ip_failed', `${iface}: raw_ip write failed: ${text.slice(0, 200)}`);
    }
  }

  async setLink(iface: string, up: boolean): Promise<void> {
    await ip(['link', 'set', checkIface(iface), up ? 'up' : 'down'], this.ipOptions);
  }

  async setMtu(iface: string, mtu: number): Promise<void> {
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 9000)
      throw new ModemfleetError('invalid_mtu', `MTU ${mtu} is outside 576-9000`);
    await ip(['link', 'set', checkIface(iface), 'mtu', String(mtu)], this.ipOptions);
  }

  async linkUp(iface: string): Promise<boolean> {
    const [link] = await ipJson<{ flags?: string[] }>(
      ['link', 'show', 'dev', checkIface(iface)],
      this.ipOptions,
    );
    return link?.flags?.includes('UP') ?? false;
  }

  private get ipOptions() {
    return {
      netns: this.options.netns,
      ...(this.options.ipTimeoutMs ? { timeoutMs: this.options.ipTimeoutMs } : {}),
    };
  }

  private async inNetns(argv: string[]): Promise<string> {
    const result = await run('ip', ['netns', 'exec', this.options.netns ?? '', ...argv], {
      timeoutMs: 5_000,
    });
    if (result.exitCode !== 0) throw new Error(result.stderr.trim() || `exit ${result.exitCode}`);
    return result.stdout;
  }
}
