import { readFile, readdir, readlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Config } from '../config.js';
import { USBNET_NAMES } from '../detect/models.js';
import { scanUsbModems } from '../detect/sysfsScan.js';
import type { DeviceDescriptor } from '../detect/types.js';
import { hasPerPortPlaceholders, powerCommandFor } from '../fleet/power.js';
import type { Finding, HostPaths } from './doctor.js';

/** The modems' checks of `modemfleet doctor`: what sysfs shows, and who holds their devices. */
export async function modemChecks(config: Config, host: HostPaths): Promise<Finding[]> {
  const all = await scanUsbModems({ sysRoot: host.sys, devRoot: host.dev ?? '/dev' });
  const usable = all.filter((d) => !d.fault);
  return [
    modemsFound(all),
    powerCommand(config, usable),
    usbnetModes(usable),
    await deviceHolders(usable, host),
  ];
}

const where = (d: DeviceDescriptor): string =>
  `${d.model} at ${d.usbPath}${d.ports.at ? ` (${d.ports.at})` : ''}`;

function modemsFound(all: readonly DeviceDescriptor[]): Finding {
  const faulty = all.filter((d) => d.fault);
  if (faulty.length > 0)
    return {
      check: 'modems',
      status: 'fail',
      detail: faulty.map((d) => `${d.usbPath}: [${d.faultCode ?? 'fault'}] ${d.fault ?? ''}`).join('; '),
      fix: faulty.some((d) => d.faultCode === 'usb_resources')
        ? 'spread the modems over more USB host controllers (a PCIe USB card per 4-6 modems), then replug'
        : 'power-cycle the modem (or reflash it if it stays in emergency download mode)',
    };
  if (all.length === 0)
    return { check: 'modems', status: 'warn', detail: 'no supported modem detected in sysfs' };
  return { check: 'modems', status: 'ok', detail: `${all.length} detected` };
}

const PER_PORT_EXAMPLE = '["/usr/sbin/uhubctl","-l","{hub}","-p","{port}","-a","cycle","-d","5"]';

function powerCommand(config: Config, modems: readonly DeviceDescriptor[]): Finding {
  const template = config.powerCycleCommand;
  if (!template)
    return {
      check: 'power command',
      status: 'ok',
      detail: 'none configured: recovery stops at AT+CFUN=1,1',
    };
  if (!hasPerPortPlaceholders(template))
    return {
      check: 'power command',
      status: modems.length > 1 ? 'fail' : 'warn',
      detail:
        `${JSON.stringify(template)} names no port: it cycles every port of every hub it reaches, ` +
        `so one wedged modem takes ${modems.length > 1 ? `all ${modems.length} modems` : 'every modem'} down`,
      fix: `set "powerCycleCommand" to a per-port template, e.g. ${PER_PORT_EXAMPLE}`,
    };
  const first = modems[0];
  let example = '';
  if (first) {
    try {
      example = `; ${first.usbPath}: ${powerCommandFor(template, { usbPath: first.usbPath, imei: '000000000000000' }).join(' ')}`;
    } catch {
      // a placeholder the config check already refused
    }
  }
  return { check: 'power command', status: 'ok', detail: `per port${example}` };
}

function usbnetModes(modems: readonly DeviceDescriptor[]): Finding {
  const wrong = modems.filter((d) => d.netDriver !== undefined && d.netDriver !== 'qmi_wwan');
  const unbound = modems.filter((d) => d.netDriver === undefined);
  if (wrong.length > 0)
    return {
      check: 'usbnet mode',
      status: 'fail',
      detail: wrong
        .map(
          (d) =>
            `${where(d)} is in ${d.usbnet === null ? d.netDriver : `${USBNET_NAMES[d.usbnet]} mode (usbnet ${d.usbnet}, ${d.netDriver})`}, not QMI`,
        )
        .join('; '),
      fix: 'on each AT port: AT+QCFG="usbnet",0 then AT+CFUN=1,1 (the modem re-enumerates in QMI mode)',
    };
  if (unbound.length > 0)
    return {
      check: 'usbnet mode',
      status: 'warn',
      detail: `no network function bound yet on ${unbound.map(where).join(', ')}`,
      fix: 'modprobe qmi_wwan; if it stays so, check the mode with AT+QCFG="usbnet"',
    };
  return {
    check: 'usbnet mode',
    status: 'ok',
    detail: modems.length > 0 ? `all ${modems.length} in QMI mode (qmi_wwan)` : 'no modem to check',
  };
}

async function list(path: string): Promise<string[] | undefined> {
  try {
    return await readdir(path);
  } catch {
    return undefined;
  }
}

/**
 * Nobody else may hold the modems' ttys or cdc-wdm devices (ModemManager, a stray minicom, a
 * second supervisor): two readers on one AT port each see half the answers. Found through the
 * `/proc/<pid>/fd` links of every process this user may read; modemfleet's own processes are not
 * counted.
 */
async function deviceHolders(modems: readonly DeviceDescriptor[], host: HostPaths): Promise<Finding> {
  const owner = new Map<string, DeviceDescriptor>();
  for (const d of modems) {
    for (const p of [...d.atCandidates, ...Object.values(d.ports), d.wdm]) if (p) owner.set(p, d);
  }
  if (owner.size === 0) return { check: 'device holders', status: 'ok', detail: 'no modem device to check' };
  const pids = ((await list(host.proc)) ?? []).filter((e) => /^\d+$/.test(e));
  const held: string[] = [];
  let unreadable = 0;
  for (const pid of pids) {
    if (Number(pid) === process.pid) continue;
    const fds = await list(join(host.proc, pid, 'fd'));
    if (!fds) {
      unreadable++;
      continue;
    }
    const paths = new Set<string>();
    for (const fd of fds) {
      try {
        const target = await readlink(join(host.proc, pid, 'fd', fd));
        if (owner.has(target)) paths.add(target);
      } catch {
        // closed meanwhile
      }
    }
    if (paths.size === 0) continue;
    const comm = (await readFile(join(host.proc, pid, 'comm'), 'utf8').catch(() => '?')).trim();
    const cmdline = (await readFile(join(host.proc, pid, 'cmdline'), 'utf8').catch(() => ''))
      .split('\0')
      .join(' ')
      .trim();
    if (/modemfleet/.test(cmdline) || comm === 'modemfleet') continue;
    held.push(
      `pid ${pid} (${comm}${cmdline ? `: ${cmdline.slice(0, 80)}` : ''}) holds ${[...paths].join(', ')}`,
    );
  }
  if (held.length > 0)
    return {
      check: 'device holders',
      status: 'fail',
      detail: held.join('; '),
      fix:
        'install deploy/99-modemfleet.rules (ID_MM_DEVICE_IGNORE) and udevadm trigger; ' +
        'systemctl stop ModemManager (or systemctl mask ModemManager); stop any other program on the ports',
    };
  return {
    check: 'device holders',
    status: unreadable > 0 ? 'warn' : 'ok',
    detail:
      unreadable > 0
        ? `no other holder seen, but ${unreadable} process(es) could not be read (run doctor as root)`
        : `no other process holds the modems' ttys or cdc-wdm devices`,
  };
}
