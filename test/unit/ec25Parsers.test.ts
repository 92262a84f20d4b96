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
  parseCregUrc,
  parseCsq,
  parseIccid,
  parseImei,
  parseImsi,
  parseQcsq,
  parseQnetdevctl,
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
    expect(parseQcsq(['+QCSQ: "LTE",-71,-101,11,-9'])).toEqual({
      technology: 'LTE',
      rssi: -71,
      rsrp: -101,
      sinr: 11,
      rsrq: -9,
    });
    expect(parseQcsq(['+QCSQ: "NOSERVICE"'])).toEqual({
      technology: null,
      rssi: null,
      rsrp: null,
      sinr: null,
      rsrq: null,
    });
    expect(parseCops(['+COPS: 0,0,"Vodafone",7'])).toEqual({ name: 'Vodafone', technology: 'LTE' });
    expect(parseCops(['+COPS: 0'])).toEqual({ name: null, technology: null });
    expect(parseCreg(['+CREG: 0,1'])).toBe('home');
    expect(parseCreg(['+CREG: 2,5,"1A2B","01C2D3E",7'])).toBe('roaming');
    expect(parseCreg(['+CEREG: 0,3'], 'AT+CEREG?')).toBe('denied');
    expect(parseCregUrc('+CREG: 2')).toBe('searching');
    expect(parseCregUrc('+CREG: 1,"1A2B","01C2D3E",7')).toBe('home');
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
    });
    expect(parseCgdcont(['+CGDCONT: 1,"IP","internet","0.0.0.0",0,0,0,0'])).toEqual([
      { cid: 1, type: 'IP', apn: 'internet' },
    ]);
    expect(parseQnetdevctl(['+QNETDEVCTL: 1,1,1,1'])).toEqual({ connected: true });
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
      [() => parseCreg(['+CREG: 0,9']), 'AT+CREG?'],
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
