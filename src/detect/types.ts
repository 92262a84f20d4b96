/** A USB modem as seen in sysfs: its functions grouped by the USB physical device path. */
export interface DeviceDescriptor {
  /** USB port path, e.g. `1-1.3`: the stable location of the modem (not its identity). */
  usbPath: string;
  /** The sysfs directory of the USB device (resolved). */
  sysPath: string;
  vid: string;
  pid: string;
  vendor: string;
  model: string;
  /** Set for devices that enumerate in a fault mode. */
  fault?: string;
  /** USB strings: device text, bounded and without control characters. Never an identity. */
  usb: { manufacturer: string | null; product: string | null; serial: string | null };
  /** Device nodes by function. */
  ports: { at?: string; modem?: string; nmea?: string; diag?: string };
  /** Network interface (wwanN) and QMI control device (/dev/cdc-wdmN). */
  net?: string;
  wdm?: string;
}

export type DetectionEvent =
  | { type: 'device.added'; device: DeviceDescriptor }
  | { type: 'device.changed'; device: DeviceDescriptor; previous: DeviceDescriptor }
  | { type: 'device.removed'; usbPath: string; previous: DeviceDescriptor };
