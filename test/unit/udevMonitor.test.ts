import { describe, expect, it } from 'vitest';
import { UdevParser, formatUdevEvent } from '../../src/detect/udevMonitor.js';
import { usbPathOf } from '../../src/detect/sysfsScan.js';
import { findModel } from '../../src/detect/models.js';

const SAMPLE = `monitor will print the received events for:
UDEV - the event which udev sends out after rule processing

UDEV  [18512.402214] add      /devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.3/1-1.3:1.2/ttyUSB2/tty/ttyUSB2 (tty)
ACTION=add
DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.3/1-1.3:1.2/ttyUSB2/tty/ttyUSB2
SUBSYSTEM=tty
DEVNAME=/dev/ttyUSB2
SEQNUM=5203
MAJOR=188
MINOR=2
ID_VENDOR=Android

UDEV  [18512.410012] remove   /devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.4 (usb)
ACTION=remove
DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.4
SUBSYSTEM=usb
DEVNAME=/dev/bus/usb/001/012

`;

describe('udev monitor parsing', () => {
  it('parses udevadm --property output, however it is chunked', () => {
    for (const size of [1, 7, 64, SAMPLE.length]) {
      const parser = new UdevParser();
      const events = [];
      for (let i = 0; i < SAMPLE.length; i += size) events.push(...parser.push(SAMPLE.slice(i, i + size)));
      expect(events).toEqual([
        {
          action: 'add',
          devpath: '/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.3/1-1.3:1.2/ttyUSB2/tty/ttyUSB2',
          subsystem: 'tty',
          devname: '/dev/ttyUSB2',
        },
        {
          action: 'remove',
          devpath: '/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.4',
          subsystem: 'usb',
          devname: '/dev/bus/usb/001/012',
        },
      ]);
    }
  });

  it('ignores garbage and incomplete records, and stays bounded', () => {
    const parser = new UdevParser();
    expect(parser.push('\u0000\u0001garbage\n\nACTION=add\n\n' + 'x'.repeat(200_000) + '\n\n')).toEqual([]);
    expect(
      parser.push(
        formatUdevEvent({
          action: 'change',
          devpath: '/bus/usb/devices/1-1.3',
          subsystem: 'usb',
          devname: null,
        }),
      ),
    ).toEqual([{ action: 'change', devpath: '/bus/usb/devices/1-1.3', subsystem: 'usb', devname: null }]);
  });

  it('finds the USB device path of any devpath', () => {
    expect(usbPathOf('/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.3/1-1.3:1.2/ttyUSB2/tty/ttyUSB2')).toBe(
      '1-1.3',
    );
    expect(usbPathOf('/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.3/1-1.3:1.4/net/wwan0')).toBe('1-1.3');
    expect(usbPathOf('/bus/usb/devices/2-1.4.2')).toBe('2-1.4.2');
    expect(usbPathOf('/devices/virtual/net/lo')).toBeUndefined();
  });

  it('identifies models from the VID:PID table', () => {
    expect(findModel('2c7c', '0125')?.model).toBe('EC25');
    expect(findModel('2C7C', '0125 ')?.model).toBe('EC25');
    expect(findModel('05c6', '9008')?.fault).toMatch(/emergency download/);
    expect(findModel('046d', 'c31c')).toBeUndefined();
  });
});
