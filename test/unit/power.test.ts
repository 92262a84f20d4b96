import { describe, expect, it } from 'vitest';
import {
  hasPerPortPlaceholders,
  hubPortOf,
  powerCommandFor,
  unknownPlaceholders,
} from '../../src/fleet/power.js';

const UHUBCTL = ['/usr/sbin/uhubctl', '-l', '{hub}', '-p', '{port}', '-a', 'cycle', '-d', '5'];

describe('power command template', () => {
  it('splits a USB path into uhubctl hub location and port', () => {
    expect(hubPortOf('1-1.3')).toEqual({ hub: '1-1', port: '3' });
    expect(hubPortOf('2-4')).toEqual({ hub: '2', port: '4' });
    expect(hubPortOf('1-1.4.2')).toEqual({ hub: '1-1.4', port: '2' });
    expect(() => hubPortOf('1-1.3; reboot')).toThrow(/not a USB port path/);
  });

  it('fills the placeholders of one modem', () => {
    expect(powerCommandFor(UHUBCTL, { usbPath: '1-1.4.2' })).toEqual([
      '/usr/sbin/uhubctl',
      '-l',
      '1-1.4',
      '-p',
      '2',
      '-a',
      'cycle',
      '-d',
      '5',
    ]);
    expect(
      powerCommandFor(['/usr/local/bin/relay', '--slot={usbPath}', '{imei}'], {
        usbPath: '2-4',
        imei: '861234567890123',
      }),
    ).toEqual(['/usr/local/bin/relay', '--slot=2-4', '861234567890123']);
  });

  it('refuses unknown placeholders and an IMEI it cannot trust', () => {
    expect(unknownPlaceholders(['x', '{hub}', '{bus}{dev}'])).toEqual(['bus', 'dev']);
    expect(() => powerCommandFor(['x', '{bus}'], { usbPath: '1-1' })).toThrow(
      /unknown placeholder\(s\) \{bus\}/,
    );
    expect(() => powerCommandFor(['x', '{imei}'], { usbPath: '1-1' })).toThrow(/no valid IMEI/);
    expect(() => powerCommandFor(['x', '{imei}'], { usbPath: '1-1', imei: '123; rm' })).toThrow(
      /no valid IMEI/,
    );
  });

  it('tells a per-port command from one that cycles every hub', () => {
    expect(hasPerPortPlaceholders(UHUBCTL)).toBe(true);
    expect(hasPerPortPlaceholders(['/usr/sbin/uhubctl', '--action', 'cycle'])).toBe(false);
    expect(hasPerPortPlaceholders(['/x', '--imei={imei}'])).toBe(true);
  });
});
