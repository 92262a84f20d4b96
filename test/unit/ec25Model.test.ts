import { describe, expect, it } from 'vitest';
import { Ec25Model, NO_FAULTS, type SimFaults, type SimProfile } from '../../src/sim/ec25Model.js';
import { defaultProfiles, parseProfiles, seededRandom, timingProfile } from '../../src/sim/profiles.js';
import { ConfigError } from '../../src/util/errors.js';

/**
 * The simulated EC25 against docs/ec25.md, on a fake clock: exact answers, registration in three
 * domains, attach and the bearer, the host's call, URCs, SIM transients, timings.
 */

const BOOT = 30;
const ATTACH = 100;

function setup(
  faults: Partial<SimFaults> = {},
  extra: Partial<SimProfile> = {},
): {
  m: Ec25Model;
  at: (cmd: string) => string[];
  delay: (cmd: string) => number;
  advance: (ms: number) => void;
  urcs: () => string[];
} {
  let t = 1_000;
  const [base] = defaultProfiles(1, 5);
  const profile: SimProfile = {
    ...base!,
    timings: { bootMs: BOOT, latencyMs: 0, attachMs: ATTACH, resetMs: 0, callMs: 50, cfunMs: 7 },
    faults: { ...NO_FAULTS, ...faults },
    ...extra,
  };
  const m = new Ec25Model(profile, () => t, seededRandom(9));
  const lines = (text: string): string[] => text.split('\r\n').filter((l) => l !== '');
  const at = (cmd: string): string[] => {
    const a = m.handle(cmd);
    return lines(a.text).filter((l) => l !== `${cmd}\r` && l !== cmd);
  };
  return {
    m,
    at: (cmd) => {
      if (m.echo) m.handle('ATE0');
      return at(cmd);
    },
    delay: (cmd) => m.handle(cmd).delayMs,
    advance: (ms) => {
      t += ms;
    },
    urcs: () => m.takeUrcs(),
  };
}

/** Powered on, booted and attached. */
function attached(faults: Partial<SimFaults> = {}, extra: Partial<SimProfile> = {}) {
  const s = setup(faults, extra);
  s.advance(BOOT + ATTACH);
  return s;
}

describe('EC25 model', () => {
  it('usbnet: QMI by default; a change is pending until the next power-on', () => {
    const { m, at } = setup();
    expect(at('AT+QCFG="usbnet"')).toEqual(['+QCFG: "usbnet",0', 'OK']);
    expect(at('AT+QCFG="usbnet",1')).toEqual(['OK']);
    expect(at('AT+QCFG="usbnet"')).toEqual(['+QCFG: "usbnet",0', 'OK']);
    expect(m.usbnet).toBe(0);
    m.powerOn();
    expect(at('AT+QCFG="usbnet"')).toEqual(['+QCFG: "usbnet",1', 'OK']);
    expect(m.usbnet).toBe(1);
    expect(at('AT+QCFG="usbnet",7')).toEqual(['ERROR']);
  });

  it('three registration domains, modes 0/1/2, location only when registered', () => {
    const { at, advance, urcs } = setup({ cs: 0 });
    for (const c of ['AT+CREG=2', 'AT+CGREG=1', 'AT+CEREG=2']) expect(at(c)).toEqual(['OK']);
    advance(BOOT);
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 2,2', 'OK']);
    expect(urcs()).toEqual([]); // nothing changed since the modes were set
    advance(ATTACH);
    expect(at('AT+CEREG?')).toEqual([
      expect.stringMatching(/^\+CEREG: 2,1,"[0-9A-F]+","[0-9A-F]+",7$/),
      'OK',
    ]);
    expect(at('AT+CGREG?')).toEqual(['+CGREG: 1,1', 'OK']);
    // a data-only SIM: CS not registered while EPS is
    expect(at('AT+CREG?')).toEqual(['+CREG: 2,0', 'OK']);
    expect(urcs()).toEqual(['+CGREG: 1', expect.stringMatching(/^\+CEREG: 1,"[0-9A-F]+","[0-9A-F]+",7$/)]);
    expect(urcs()).toEqual([]);
    expect(at('AT+CEREG=0')).toEqual(['OK']);
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,1', 'OK']);
  });

  it('registration faults: denied, searching, roaming, fixed CS/PS stats', () => {
    const { m, at, advance } = attached({ registration: 'roaming', ps: 5, cs: 10 });
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,5', 'OK']);
    expect(at('AT+CGREG?')).toEqual(['+CGREG: 0,5', 'OK']);
    expect(at('AT+CREG?')).toEqual(['+CREG: 0,10', 'OK']);
    m.profile.faults.registration = 'denied';
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,3', 'OK']);
    expect(at('AT+CGPADDR=1')).toEqual(['+CGPADDR: 1,"0.0.0.0"', 'OK']);
    m.profile.faults.registration = 'searching';
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,2', 'OK']);
    m.profile.faults.registration = 'ok';
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,2', 'OK']);
    advance(ATTACH);
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,1', 'OK']);
  });

  it('the bearer: CGPADDR and CGCONTRDP show the address once attached, with no call', () => {
    const { m, at, advance } = setup({}, { subnet: '100.65.3', dns: ['9.9.9.9', '1.1.1.1'] });
    advance(BOOT);
    expect(at('AT+CGPADDR=1')).toEqual(['+CGPADDR: 1,"0.0.0.0"', 'OK']);
    expect(at('AT+CGCONTRDP=1')).toEqual(['OK']);
    advance(ATTACH);
    const addr = m.address;
    expect(addr).toMatch(/^100\.65\.3\.\d+$/);
    expect(m.hostCall).toBe(false);
    expect(at('AT+CGPADDR=1')).toEqual([`+CGPADDR: 1,"${addr}"`, 'OK']);
    expect(at('AT+CGCONTRDP=1')).toEqual([
      `+CGCONTRDP: 1,5,"internet","${addr}.255.255.255.0","100.65.3.1","9.9.9.9","1.1.1.1"`,
      'OK',
    ]);
    expect(at('AT+CGDCONT=1,"IP","lab.apn"')).toEqual(['OK']);
    expect(at('AT+CGCONTRDP=1')[0]).toContain('"lab.apn"');
  });

  it('without a lab subnet: a 10.64/10 address, a /29 and its gateway, default DNS', () => {
    const { at } = attached();
    const line = at('AT+CGCONTRDP=1')[0] ?? '';
    const m =
      /^\+CGCONTRDP: 1,5,"internet","(10\.\d+\.\d+)\.(\d+)\.255\.255\.255\.248","(10\.\d+\.\d+)\.(\d+)","[\d.]+","[\d.]+"$/.exec(
        line,
      );
    expect(m, line).not.toBeNull();
    const [, net, host, gwNet, gw] = m!;
    expect(gwNet).toBe(net);
    expect(Number(gw) >> 3).toBe(Number(host) >> 3);
    expect(gw).not.toBe(host);
  });

  it('CFUN=0/4 detach after cfunMs; CFUN=1 attaches again with a new address', () => {
    const { m, at, delay, advance } = attached();
    const first = m.address;
    expect(delay('AT+CFUN=0')).toBe(7);
    expect(m.address).toBeNull();
    expect(at('AT+CEREG?')).toEqual(['+CEREG: 0,0', 'OK']);
    expect(at('AT+CFUN?')).toEqual(['+CFUN: 0', 'OK']);
    expect(at('AT+CFUN=1')).toEqual(['OK']);
    expect(at('AT+CGPADDR=1')).toEqual(['+CGPADDR: 1,"0.0.0.0"', 'OK']);
    advance(ATTACH);
    expect(m.address).not.toBeNull();
    expect(m.address).not.toBe(first);
    expect(at('AT+CFUN=4')).toEqual(['OK']);
    expect(m.cfun).toBe(4);
    expect(m.isAttached).toBe(false);
  });

  it('sameAddress 1: every attach gets the previous address back', () => {
    const { m, at, advance } = attached({ sameAddress: 1 });
    const first = m.address;
    at('AT+CFUN=0');
    at('AT+CFUN=1');
    advance(ATTACH);
    expect(m.address).toBe(first);
  });

  it('$QCRMCALL: the host call in QMI mode, after callMs; query, stop, refusal, silence', () => {
    const { m, at, delay, advance } = attached();
    expect(at('AT$QCRMCALL?')).toEqual(['OK']);
    expect(delay('AT$QCRMCALL=1,1')).toBe(50);
    expect(m.hostCall).toBe(false);
    advance(50);
    expect(m.hostCall).toBe(true);
    expect(at('AT$QCRMCALL?')).toEqual(['$QCRMCALL: 1,V4', 'OK']);
    expect(at('AT$QCRMCALL=1,1')).toEqual(['$QCRMCALL: 1,V4', 'OK']);
    expect(at('AT$QCRMCALL=0,1')).toEqual(['OK']);
    expect(m.hostCall).toBe(false);
    expect(at('AT$QCRMCALL?')).toEqual(['OK']);
    m.profile.faults.dataCallRefused = true;
    expect(at('AT$QCRMCALL=1,1')).toEqual(['ERROR']);
    m.profile.faults.dataCallRefused = false;
    m.profile.faults.callSilentlyFails = true;
    expect(at('AT$QCRMCALL=1,1')).toEqual(['OK']);
    advance(100);
    expect(m.hostCall).toBe(false);
    expect(at('AT$QCRMCALL?')).toEqual(['OK']);
  });

  it('$QCRMCALL needs an attach and QMI mode; QNETDEVCTL is ECM/RNDIS only', () => {
    const s = setup();
    s.advance(BOOT);
    expect(s.at('AT$QCRMCALL=1,1')).toEqual(['ERROR']); // not attached yet
    s.advance(ATTACH);
    expect(s.at('AT+QNETDEVCTL=1,1,1')).toEqual(['ERROR']);
    expect(s.at('AT+QNETDEVCTL?')).toEqual(['ERROR']);
    for (const usbnet of [1, 2, 3] as const) {
      const e = attached({}, { usbnet });
      expect(e.at('AT$QCRMCALL=1,1')).toEqual(['ERROR']);
      expect(e.at('AT+QNETDEVCTL=1,1,1')).toEqual(usbnet === 2 ? ['ERROR'] : ['OK']);
      expect(e.m.hostCall).toBe(usbnet !== 2);
    }
  });

  it('the host call goes down on detach, on reset, and on a network deactivation', () => {
    const { m, at, advance, urcs } = attached();
    expect(at('AT+CGEREP=2,1')).toEqual(['OK']);
    const dial = (): void => {
      at('AT$QCRMCALL=1,1');
      advance(50);
      expect(m.hostCall).toBe(true);
    };
    dial();
    const addr = m.address;
    m.dropCall();
    expect(m.hostCall).toBe(false);
    expect(m.address).toBe(addr); // still attached
    expect(urcs()).toEqual(['+CGEV: NW PDN DEACT 1']);
    dial(); // the driver redials
    at('AT+CFUN=0');
    expect(m.hostCall).toBe(false);
    at('AT+CFUN=1');
    advance(ATTACH);
    dial();
    m.detachNetwork();
    expect(m.hostCall).toBe(false);
    expect(m.address).toBeNull();
    expect(urcs()).toEqual(['+CGEV: NW DETACH']);
    advance(ATTACH);
    expect(m.isAttached).toBe(true);
    dial();
    m.powerOn();
    expect(m.hostCall).toBe(false);
    // CGEREP is off after power-on: no +CGEV
    advance(BOOT + ATTACH);
    dial();
    m.dropCall();
    expect(urcs()).toEqual([]);
  });

  it('SIM busy after boot (CME 14), SIM failure (CME 13), no SIM (CME 10); CMEE modes', () => {
    const busy = setup({ simBusyMs: 200 });
    busy.advance(BOOT);
    expect(busy.at('AT+CPIN?')).toEqual(['+CME ERROR: 14']);
    expect(busy.at('AT+CIMI')).toEqual(['+CME ERROR: 14']);
    expect(busy.at('AT+QCCID')).toEqual(['+CME ERROR: 14']);
    busy.advance(ATTACH);
    expect(busy.at('AT+CEREG?')).toEqual(['+CEREG: 0,0', 'OK']);
    busy.advance(100);
    expect(busy.at('AT+CPIN?')).toEqual(['+CPIN: READY', 'OK']);
    expect(busy.at('AT+CEREG?')).toEqual(['+CEREG: 0,2', 'OK']);
    busy.advance(ATTACH);
    expect(busy.at('AT+CEREG?')).toEqual(['+CEREG: 0,1', 'OK']);

    const failed = attached({ simFailure: true });
    expect(failed.at('AT+CPIN?')).toEqual(['+CME ERROR: 13']);
    expect(failed.at('AT+CEREG?')).toEqual(['+CEREG: 0,0', 'OK']);
    expect(failed.at('AT+CMEE=2')).toEqual(['OK']);
    expect(failed.at('AT+CIMI')).toEqual(['+CME ERROR: SIM failure']);
    expect(failed.at('AT+CMEE=0')).toEqual(['OK']);
    expect(failed.at('AT+QCCID')).toEqual(['ERROR']);

    const none = attached({ noSim: true });
    expect(none.at('AT+CPIN?')).toEqual(['+CME ERROR: 10']);
    expect(none.at('AT+CMEE=2')).toEqual(['OK']);
    expect(none.at('AT+CPIN?')).toEqual(['+CME ERROR: SIM not inserted']);
    expect(none.m.bootText() + none.m.simReadyText()).toBe('\r\nRDY\r\n');
  });

  it('signal: QCSQ SINR raw 0-250, the same in QENG servingcell', () => {
    const { at } = attached({}, { rssi: 21 });
    const q = at('AT+QCSQ')[0] ?? '';
    const m = /^\+QCSQ: "LTE",(-\d+),(-\d+),(\d+),(-\d+)$/.exec(q);
    expect(m, q).not.toBeNull();
    const sinr = Number(m![3]);
    expect(sinr).toBeGreaterThanOrEqual(0);
    expect(sinr).toBeLessThanOrEqual(250);
    expect(sinr / 5 - 20).toBeGreaterThan(5); // a good signal is a positive SINR in dB
    const e = at('AT+QENG="servingcell"')[0] ?? '';
    const f = e.split(',');
    expect(f.slice(0, 4)).toEqual(['+QENG: "servingcell"', '"NOCONN"', '"LTE"', '"FDD"']);
    expect(f).toHaveLength(18);
    expect(Number(f[16])).toBeGreaterThanOrEqual(0);
    expect(Number(f[16])).toBeLessThanOrEqual(250);
  });

  it('timing profiles: realistic draws seconds per event within the ranges', () => {
    const r = timingProfile('realistic');
    const [p] = defaultProfiles(1, 1, { timing: 'realistic' });
    expect(p!.timings).toEqual(r);
    const m = new Ec25Model(p!, () => 0, seededRandom(3));
    const boots = Array.from({ length: 50 }, () => m.draw('bootMs') + m.draw('resetMs'));
    expect(Math.min(...boots)).toBeGreaterThanOrEqual(10_000);
    expect(Math.max(...boots)).toBeLessThanOrEqual(20_000);
    expect(new Set(boots).size).toBeGreaterThan(10);
    for (let i = 0; i < 50; i++) {
      expect(m.draw('attachMs')).toBeGreaterThanOrEqual(2_000);
      expect(m.draw('callMs')).toBeLessThanOrEqual(3_000);
      expect(m.draw('cfunMs')).toBeLessThanOrEqual(5_000);
    }
    expect(defaultProfiles(1)[0]!.timings.attachMs).toBe(400);
  });

  it('profile JSON: new fields validated with path: message', () => {
    const [p] = parseProfiles(
      [
        {
          usbnet: 1,
          dns: ['8.8.8.8', '8.8.4.4'],
          timings: { callMs: [1000, 2000], cfunMs: 5 },
          faults: { cs: 0, ps: null, simBusyMs: 300, registration: 'roaming', callSilentlyFails: true },
        },
      ],
      1,
      { timing: 'realistic' },
    );
    expect(p).toMatchObject({
      usbnet: 1,
      dns: ['8.8.8.8', '8.8.4.4'],
      timings: { callMs: [1000, 2000], cfunMs: 5, attachMs: [2_000, 15_000] },
      faults: { cs: 0, ps: null, simBusyMs: 300, registration: 'roaming', callSilentlyFails: true },
    });
    let err: unknown;
    try {
      parseProfiles([
        {
          usbnet: 4,
          dns: ['x'],
          timings: { callMs: [3, 1], bogusMs: 1 },
          faults: { cs: 12, registration: 'maybe', simBusyMs: -1, nope: true },
        },
      ]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      'profiles[0].timings.callMs: must be 0-600000 ms, or [min, max] within that',
      'profiles[0].timings.bogusMs: unknown timing',
      'profiles[0].faults.cs: null (as EPS) or a registration stat 0-11',
      'profiles[0].faults.registration: ok, roaming, denied or searching',
      'profiles[0].faults.simBusyMs: must be 0-600000 ms',
      'profiles[0].faults.nope: unknown fault',
      'profiles[0].usbnet: 0 (QMI/RmNet), 1 (ECM), 2 (MBIM) or 3 (RNDIS)',
      'profiles[0].dns: two IPv4 addresses, e.g. ["10.74.210.210", "10.74.210.211"]',
    ]);
  });
});
