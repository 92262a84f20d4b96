import { describe, expect, it } from 'vitest';
import {
  Ec25AnswerError,
  parseAti,
  parseCfun,
  parseCgdcont,
  parseCgpaddr,
  parseCops,
  parseCpin,
  parseCreg,
  parseCgcontrdp,
  parseCgev,
  parseCsq,
  dataRegistration,
  parseQcrmcall,
  parseRegistrationUrc,
  parseUsbnet,
  sinrToDb,
  parseIccid,
  parseImei,
  parseImsi,
  parseQcsq,
  parseServingCell,
} from '../../src/ec25/parsers.js';

// answer lines exactly as in shared/reference/ec25.md (without the final OK)
describe('EC25 parsers with the reference answers', () => {
  it('identity', () => {
    expect(parseAti(['Quectel', 'EC25', 'Revision: EC25EFAR06A11M4G'])).toEqual({
      manufacturer: 'Quectel',
      model: 'EC25',
      firmware: 'EC25EFAR06A11M4G',
    });
    expect(parseImei(['866834040000017'])).toBe('866834040000017');
    expect(parseIccid(['+QCCID: 8901260852290847433F'])).toBe('8901260852290847433');
    expect(parseImsi(['262021234567890'])).toBe('262021234567890');
  });

  it('SIM, signal, operator, registration', () => {
    expect(parseCpin(['+CPIN: READY'])).toBe('ready');
    expect(parseCpin(['+CPIN: SIM PIN'])).toBe('pin');
    expect(parseCpin(['+CPIN: SIM PUK'])).toBe('puk');
    expect(parseCpin(['+CPIN: NOT READY'])).toBe('not_ready');
    expect(parseCsq(['+CSQ: 21,99'])).toMatchObject({ rssi: -71 });
    expect(parseCsq(['+CSQ: 99,99']).rssi).toBeNull();
    // the reference's example: SINR raw 142 → 142/5 − 20 = 8.4 dB
    expect(parseQcsq(['+QCSQ: "LTE",-66,-94,142,-9'])).toEqual({
      technology: 'LTE',
      rssi: -66,
      rsrp: -94,
      sinr: 142,
      sinrDb: 8.4,
      rsrq: -9,
    });
    expect([sinrToDb(0), sinrToDb(250), sinrToDb(251), sinrToDb(null)]).toEqual([-20, 30, null, null]);
    expect(parseQcsq(['+QCSQ: "NOSERVICE"'])).toEqual({
      technology: null,
      rssi: null,
      rsrp: null,
      sinr: null,
      sinrDb: null,
      rsrq: null,
    });
    expect(parseCops(['+COPS: 0,0,"Vodafone",7'])).toEqual({ name: 'Vodafone', technology: 'LTE' });
    expect(parseCops(['+COPS: 0'])).toEqual({ name: null, technology: null });
    expect(parseCreg(['+CREG: 0,1'])).toBe('home');
    expect(parseCreg(['+CREG: 2,5,"1A2B","01C2D3E",7'])).toBe('roaming');
    expect(parseCreg(['+CEREG: 0,3'], 'AT+CEREG?')).toBe('denied');
    expect(parseRegistrationUrc('+CREG: 2')?.stat).toBe('searching');
    expect(parseRegistrationUrc('+CREG: 1,"1A2B","01C2D3E",7')?.stat).toBe('home');
  });

  it('every registration stat 0-11 parses; data registration is EPS or PS, whatever CS says', () => {
    const names = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((n) =>
      parseCreg([`+CEREG: 2,${n}`], 'AT+CEREG?'),
    );
    expect(names).toEqual([
      'idle',
      'home',
      'searching',
      'denied',
      'unknown',
      'roaming',
      'sms_only',
      'sms_only',
      'emergency',
      'home',
      'roaming',
      'emergency',
    ]);
    // URCs by domain, mode 1 and mode 2 (location quoted, cell ids not padded, lowercase)
    expect(parseRegistrationUrc('+CEREG: 1')).toEqual({ domain: 'eps', stat: 'home' });
    expect(parseRegistrationUrc('+CGREG: 1,"D504","80428B5",7')).toEqual({ domain: 'ps', stat: 'home' });
    expect(parseRegistrationUrc('+CEREG: 10,"1a2b","671f98a",7')).toEqual({ domain: 'eps', stat: 'roaming' });
    expect(parseRegistrationUrc('+CREG: 0')).toEqual({ domain: 'cs', stat: 'idle' });
    // a query answer is not a URC
    expect(parseRegistrationUrc('+CEREG: 2,1')).toBeUndefined();
    // a data-only SIM: CS not registered, EPS home
    expect(dataRegistration({ ps: null, eps: 'home' })).toBe('home');
    expect(dataRegistration({ ps: 'searching', eps: 'roaming' })).toBe('roaming');
    expect(dataRegistration({ ps: 'idle', eps: 'denied' })).toBe('denied');
    expect(dataRegistration({ ps: 'searching', eps: 'sms_only' })).toBe('searching');
    expect(dataRegistration({ ps: null, eps: 'emergency' })).toBe('emergency');
  });

  it('QMI-mode data call: $QCRMCALL, CGCONTRDP, usbnet, +CGEV', () => {
    expect(parseQcrmcall(['$QCRMCALL: 1,V4'])).toBe(true);
    expect(parseQcrmcall(['$QCRMCALL: 1, V4'])).toBe(true);
    expect(parseQcrmcall(['$QCRMCALL: 1,4'])).toBe(true);
    expect(parseQcrmcall(['$QCRMCALL: 1,V6'])).toBe(false);
    expect(parseQcrmcall([])).toBe(false);
    expect(
      parseCgcontrdp([
        '+CGCONTRDP: 1,5,"internet","10.64.12.7.255.255.255.0","10.64.12.1","10.74.210.210","10.74.210.211"',
      ]),
    ).toEqual({
      address: '10.64.12.7',
      prefix: 24,
      gateway: '10.64.12.1',
      dns: ['10.74.210.210', '10.74.210.211'],
      mtu: null,
    });
    // trailing fields: P-CSCF, IM-CN, LIPA, and the IPv4 MTU in 12th place
    expect(
      parseCgcontrdp(['+CGCONTRDP: 1,5,"ims","10.1.2.3.255.255.255.252","","8.8.8.8","",,"",0,0,1430'])?.mtu,
    ).toBe(1430);
    expect(parseCgcontrdp(['+CGCONTRDP: 2,6,"x","10.1.2.3.255.255.255.0"'])).toBeNull();
    expect(parseCgcontrdp([])).toBeNull();
    expect(parseUsbnet(['+QCFG: "usbnet",0'])).toBe(0);
    expect(parseUsbnet(['+QCFG: "usbnet",3'])).toBe(3);
    expect(parseCgev('+CGEV: NW PDN DEACT 1')).toBe('NW PDN DEACT 1');
    expect(parseCgev('+CGEV: PDN DEACT 1')).toBe('PDN DEACT 1');
    expect(parseCgev('+CGEV: ME PDN DEACT 2')).toBeUndefined();
    expect(parseCgev('+CGEV: NW DEACT "IP","10.1.2.3",1')).toBe('NW DEACT "IP","10.1.2.3",1');
    expect(parseCgev('+CGEV: NW DETACH')).toBe('NW DETACH');
    expect(parseCgev('+CGEV: NW PDN ACT 1')).toBeUndefined();
    expect(parseCgpaddr(['+CGPADDR: 1'])).toBeNull();
  });

  it('serving cell, PDP context, data call, address, functionality', () => {
    expect(
      parseServingCell([
        '+QENG: "servingcell","NOCONN","LTE","FDD",262,02,7676A09,188,6300,20,3,3,603,-104,-9,-78,11,23',
      ]),
    ).toEqual({
      state: 'NOCONN',
      technology: 'LTE',
      mcc: 262,
      mnc: 2,
      cellId: '7676A09',
      rsrp: -104,
      rsrq: -9,
      rssi: -78,
      sinr: 11,
      sinrDb: null,
    });
    expect(parseCgdcont(['+CGDCONT: 1,"IP","internet","0.0.0.0",0,0,0,0'])).toEqual([
      { cid: 1, type: 'IP', apn: 'internet' },
    ]);
    expect(parseCgpaddr(['+CGPADDR: 1,"10.64.12.7"'])).toBe('10.64.12.7');
    expect(parseCgpaddr(['+CGPADDR: 1,"0.0.0.0"'])).toBeNull();
    expect(parseCfun(['+CFUN: 1'])).toBe(1);
  });

  it('unexpected answers are typed errors naming the command and the text', () => {
    const cases: [() => unknown, string][] = [
      [() => parseImei(['86683404000001']), 'AT+CGSN'],
      [() => parseIccid(['+QCCID: 12']), 'AT+QCCID'],
      [() => parseCpin(['+CPIN: WHATEVER']), 'AT+CPIN?'],
      [() => parseCsq(['+CSQ: 40,99']), 'AT+CSQ'],
      [() => parseCgpaddr(['+CGPADDR: 1,"999.1.1.1"']), 'AT+CGPADDR=1'],
      [() => parseAti([]), 'ATI'],
      [() => parseCreg(['+CREG: 0,12']), 'AT+CREG?'],
      [() => parseCgcontrdp(['+CGCONTRDP: 1,5,"internet","10.1.2.3"']), 'AT+CGCONTRDP=1'],
      [() => parseQcrmcall(['$QCRMCALL: maybe']), 'AT$QCRMCALL?'],
      [() => parseUsbnet(['+QCFG: "usbnet"']), 'AT+QCFG="usbnet"'],
      [() => parseServingCell(['+QENG: "servingcell","BOGUS"']), 'AT+QENG="servingcell"'],
    ];
    for (const [fn, command] of cases) {
      let caught: unknown;
      try {
        fn();
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(Ec25AnswerError);
      expect((caught as Ec25AnswerError).command).toBe(command);
      expect((caught as Ec25AnswerError).message).toContain(command);
    }
  });

  it('device text is cleaned: no quotes, control characters or excess length', () => {
    expect(parseCops(['+COPS: 0,0,"Evil\x07Net `rm` $(x)",7']).name).toBe(
      'EvilNet `rm` $(x)'.replace('\x07', ''),
    );
    expect(parseAti(['Quec"tel', 'EC25', 'Revision: X1']).manufacturer).toBe('Quectel');
  });
});
