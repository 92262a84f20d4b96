/**
 * USB modems we know, by VID:PID. Data, not code: a new model is a new row.
 *
 * Functions are found by the driver bound to each interface, not by interface number: the EC25's
 * composition changes with `AT+QCFG="usbnet"`. In the default QMI mode (usbnet 0) it is if00 DIAG,
 * if01 NMEA, if02 AT, if03 modem (`option`), if04 `qmi_wwan` (ModemManager,
 * src/plugins/quectel/77-mm-quectel-port-types.rules); in RNDIS mode (3) `rndis_host` takes if00/if01
 * and the four serial interfaces move up to if02-if05 (a `/sys/kernel/debug/usb/devices` dump of an
 * EC25 in https://forum.gl-inet.com/t/x750-need-help-4g-modem-no-working/28294); in ECM (1) and MBIM
 * (2) the serial interfaces come first and `cdc_ether` / `cdc_mbim` take a control and a data
 * interface after them (not confirmed on an EC25 by a dump; detection does not depend on it). The
 * kernel's option.c matches these modems by interface class (`USB_DEVICE_AND_INTERFACE_INFO(...,
 * 0xff, 0xff, 0xff), .driver_info = NUMEP2` and `0xff, 0, 0`) rather than reserving interface 4, so
 * `option` binds exactly the serial functions in every mode (older kernels reserved if04 by number
 * and lost the AT port in RNDIS mode).
 */
export type SerialFunction = 'diag' | 'nmea' | 'at' | 'modem';

export type FaultCode = 'emergency_download' | 'usb_resources';

export interface ModelInfo {
  vid: string;
  pid: string;
  vendor: string;
  model: string;
  /** A device that only enumerates like this after a failed reset: never usable, always a fault. */
  fault?: string;
  faultCode?: FaultCode;
  /** The functions of the interfaces bound to a serial driver, in interface order. */
  serial: readonly SerialFunction[];
  /** AT ports in order of preference (probed in this order); any other serial port after them. */
  atPreference: readonly SerialFunction[];
}

/** Serial drivers whose ttys carry a modem's functions. */
export const SERIAL_DRIVERS: ReadonlySet<string> = new Set(['option']);

/** Network drivers, and the `AT+QCFG="usbnet"` mode each one means (null: not an EC25 mode). */
export const NET_DRIVERS: ReadonlyMap<string, UsbNetMode | null> = new Map<string, UsbNetMode | null>([
  ['qmi_wwan', 0],
  ['cdc_ether', 1],
  ['cdc_mbim', 2],
  ['rndis_host', 3],
  ['cdc_ncm', null],
]);

/** `AT+QCFG="usbnet"`: 0 QMI/RmNet (what modemfleet drives), 1 ECM, 2 MBIM, 3 RNDIS. */
export type UsbNetMode = 0 | 1 | 2 | 3;

export const USBNET_NAMES: Readonly<Record<UsbNetMode, string>> = {
  0: 'QMI',
  1: 'ECM',
  2: 'MBIM',
  3: 'RNDIS',
};

const QUECTEL = {
  serial: ['diag', 'nmea', 'at', 'modem'],
  atPreference: ['at', 'modem'],
} as const;

export const MODELS: readonly ModelInfo[] = [
  { vid: '2c7c', pid: '0125', vendor: 'Quectel', model: 'EC25', ...QUECTEL },
  { vid: '2c7c', pid: '0121', vendor: 'Quectel', model: 'EC21', ...QUECTEL },
  { vid: '2c7c', pid: '0306', vendor: 'Quectel', model: 'EP06', ...QUECTEL },
  { vid: '2c7c', pid: '0512', vendor: 'Quectel', model: 'EG12', ...QUECTEL },
  { vid: '2c7c', pid: '0296', vendor: 'Quectel', model: 'BG96', ...QUECTEL },
  {
    vid: '05c6',
    pid: '9008',
    vendor: 'Qualcomm',
    model: 'QHSUSB__BULK',
    fault: 'emergency download mode (QHSUSB__BULK): the modem failed a reset; power-cycle or reflash it',
    faultCode: 'emergency_download',
    serial: ['diag'],
    atPreference: [],
  },
];

export function findModel(vid: string, pid: string): ModelInfo | undefined {
  const v = vid.trim().toLowerCase();
  const p = pid.trim().toLowerCase();
  return MODELS.find((m) => m.vid === v && m.pid === p);
}
