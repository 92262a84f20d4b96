import type { FaultCode, UsbNetMode } from './models.js';

export type { FaultCode, UsbNetMode };

/** A USB modem as seen in sysfs: its functions grouped by the USB physical device path. */
export interface DeviceDescriptor {
  /** USB port path, e.g. `1-1.3`: the stable location of the modem (not its identity). */
  usbPath: string;
  /** The sysfs directory of the USB device (resolved). */
  sysPath: string;
  /** PCI address of the USB host controller the device hangs off, e.g. `0000:00:14.0`, when known. */
  controller?: string;
  vid: string;
  pid: string;
  vendor: string;
  model: string;
  /** Set for devices that cannot be used: what is wrong and what to do, for an operator. */
  fault?: string;
  /** The fault as a stable code (set whenever `fault` is). */
  faultCode?: FaultCode;
  /** USB strings: device text, bounded and without control characters. Never an identity. */
  usb: { manufacturer: string | null; product: string | null; serial: string | null };
  /** Device nodes by function. `at` is the preferred AT candidate (`atCandidates[0]`). */
  ports: { at?: string; modem?: string; nmea?: string; diag?: string };
  /**
   * Every tty on an interface bound to a serial driver (`option`), the model's preferred AT port
   * first: the link probes them in this order with `AT` and keeps the one that answers.
   */
  atCandidates: string[];
  /** The network interface (e.g. `wwan0`, or a udev name like `wwp0s20u1i4`) of the net function. */
  net?: string;
  /** The driver bound to the net function: qmi_wwan, cdc_ether, cdc_mbim, rndis_host or cdc_ncm. */
  netDriver?: string;
  /** `AT+QCFG="usbnet"` as inferred from `netDriver`; null when no net function is bound (yet). */
  usbnet: UsbNetMode | null;
  /** QMI/MBIM control device (/dev/cdc-wdmN). */
  wdm?: string;
}

export type DetectionEvent =
  | { type: 'device.added'; device: DeviceDescriptor }
  | { type: 'device.changed'; device: DeviceDescriptor; previous: DeviceDescriptor }
  | { type: 'device.removed'; usbPath: string; previous: DeviceDescriptor };
