import { USB_PATH_PATTERN } from '../detect/sysfsScan.js';
import { ModemfleetError } from '../util/errors.js';

/**
 * The power-cycle command is a template: an argv whose elements may name the modem's place, so
 * one modem's port is cycled and not the whole farm. uhubctl without `-l`/`-p` acts on every port
 * of every smart hub it finds (https://github.com/mvp/uhubctl, "-l - limit hub by location",
 * "-p - ports to operate on"); with them:
 * `["/usr/sbin/uhubctl", "-l", "{hub}", "-p", "{port}", "-a", "cycle", "-d", "5"]`.
 */
export const POWER_PLACEHOLDERS = ['hub', 'port', 'usbPath', 'imei'] as const;
export type PowerPlaceholder = (typeof POWER_PLACEHOLDERS)[number];

const PLACEHOLDER = /\{([A-Za-z_][A-Za-z0-9_]*)\}/g;
const PER_PORT: readonly PowerPlaceholder[] = ['hub', 'port', 'usbPath', 'imei'];
const IMEI_PATTERN = /^\d{15}$/;

/** Every `{name}` the template uses, in order of first use. */
export function placeholdersOf(template: readonly string[]): string[] {
  const names = new Set<string>();
  for (const arg of template) for (const m of arg.matchAll(PLACEHOLDER)) names.add(m[1] ?? '');
  return [...names];
}

/** Placeholders the template uses that are not ours (a config error names them). */
export function unknownPlaceholders(template: readonly string[]): string[] {
  return placeholdersOf(template).filter((n) => !(POWER_PLACEHOLDERS as readonly string[]).includes(n));
}

/** True when the command is aimed at one modem (it names its hub and port, path or IMEI). */
export function hasPerPortPlaceholders(template: readonly string[]): boolean {
  const used = placeholdersOf(template);
  return PER_PORT.some((p) => used.includes(p));
}

/**
 * A USB location as uhubctl names it: the hub is the path without its last port, the port the
 * last number. `1-1.3` → hub `1-1`, port `3`; `2-4` (a root hub port) → hub `2`, port `4`;
 * `1-1.4.2` → hub `1-1.4`, port `2`.
 */
export function hubPortOf(usbPath: string): { hub: string; port: string } {
  if (!USB_PATH_PATTERN.test(usbPath))
    throw new ModemfleetError('bad_usb_path', `not a USB port path: ${JSON.stringify(usbPath.slice(0, 40))}`);
  const dot = usbPath.lastIndexOf('.');
  const cut = dot >= 0 ? dot : usbPath.indexOf('-');
  return { hub: usbPath.slice(0, cut), port: usbPath.slice(cut + 1) };
}

/**
 * The argv of the power command for one modem. The values come from sysfs (the USB path) and the
 * modem (the IMEI) and are checked before they reach a command line: a path like `1-1.3`, an IMEI
 * of 15 digits. Throws on an unknown placeholder or a missing IMEI the template needs.
 */
export function powerCommandFor(
  template: readonly string[],
  modem: { usbPath: string; imei?: string | undefined },
): string[] {
  const unknown = unknownPlaceholders(template);
  if (unknown.length > 0)
    throw new ModemfleetError(
      'power_command_invalid',
      `powerCycleCommand: unknown placeholder(s) ${unknown.map((n) => `{${n}}`).join(', ')}`,
    );
  const { hub, port } = hubPortOf(modem.usbPath);
  const values: Record<PowerPlaceholder, string | undefined> = {
    hub,
    port,
    usbPath: modem.usbPath,
    imei: modem.imei,
  };
  if (placeholdersOf(template).includes('imei') && !(modem.imei && IMEI_PATTERN.test(modem.imei)))
    throw new ModemfleetError(
      'power_command_invalid',
      `powerCycleCommand uses {imei} but modem at ${modem.usbPath} has no valid IMEI yet`,
    );
  return template.map((arg) =>
    arg.replace(PLACEHOLDER, (_, name: string) => values[name as PowerPlaceholder] ?? ''),
  );
}
