import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ModemfleetError } from '../util/errors.js';

/**
 * A USB-level reset, the rung before cutting power: de-authorize the device and authorize it
 * again (`authorized` 0 then 1, Documentation/usb/authorization.rst). The kernel unbinds every
 * interface driver and unconfigures the device, then configures it afresh: the modem re-enumerates
 * its ttys and net interface without losing power. Needs write access to sysfs (root).
 */
export async function usbReset(sysPath: string, options: { pauseMs?: number } = {}): Promise<void> {
  const file = join(sysPath, 'authorized');
  const write = async (value: '0' | '1'): Promise<void> => {
    try {
      await writeFile(file, value);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'ENOENT' || code === 'ENOTDIR'
          ? 'no such file: the USB device is gone or the path is not a USB device'
          : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
            ? 'not permitted (needs root, or CAP_SYS_ADMIN over a writable /sys)'
            : (code ?? 'write failed');
      throw new ModemfleetError('usb_reset_failed', `USB reset: cannot write ${value} to ${file}: ${why}`, {
        cause: err,
      });
    }
  };
  await write('0');
  if (options.pauseMs) await sleep(options.pauseMs);
  await write('1');
}
