/**
 * USB modems we know, by VID:PID. Data, not code: a new model is a new row.
 * Interface numbers are the USB interface (ifNN) that carries each function.
 */
export interface ModelInfo {
  vid: string;
  pid: string;
  vendor: string;
  model: string;
  /** A device that only enumerates like this after a failed reset: never usable, always a fault. */
  fault?: string;
  interfaces: { diag?: number; nmea?: number; at?: number; modem?: number; net?: number };
}

const QUECTEL_QMI = { diag: 0, nmea: 1, at: 2, modem: 3, net: 4 };

export const MODELS: readonly ModelInfo[] = [
  { vid: '2c7c', pid: '0125', vendor: 'Quectel', model: 'EC25', interfaces: QUECTEL_QMI },
  { vid: '2c7c', pid: '0121', vendor: 'Quectel', model: 'EC21', interfaces: QUECTEL_QMI },
  { vid: '2c7c', pid: '0306', vendor: 'Quectel', model: 'EP06', interfaces: QUECTEL_QMI },
  { vid: '2c7c', pid: '0512', vendor: 'Quectel', model: 'EG12', interfaces: QUECTEL_QMI },
  { vid: '2c7c', pid: '0296', vendor: 'Quectel', model: 'BG96', interfaces: QUECTEL_QMI },
  {
    vid: '05c6',
    pid: '9008',
    vendor: 'Qualcomm',
    model: 'QHSUSB__BULK',
    fault: 'emergency download mode (QHSUSB__BULK): the modem failed a reset; power-cycle or reflash it',
    interfaces: { diag: 0 },
  },
];

export function findModel(vid: string, pid: string): ModelInfo | undefined {
  const v = vid.trim().toLowerCase();
  const p = pid.trim().toLowerCase();
  return MODELS.find((m) => m.vid === v && m.pid === p);
}
