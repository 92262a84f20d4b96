import { describe, expect, it } from 'vitest';
import {
  formatPidFile,
  parsePidFile,
  proxyFingerprint,
  type ProxyRecord,
} from '../../src/net/proxyRecord.js';

/** The pid file a proxy leaves for the next run: `PID PROGRAM`, then the record it is adopted by. */

const record: ProxyRecord = {
  v: 1,
  name: '866834040000017-socks',
  pid: 4242,
  program: 'microsocks',
  start: 123456,
  ports: [20001],
  imei: '866834040000017',
  fingerprint: 'a'.repeat(64),
  egress: '100.65.1.7',
  iface: 'wwan0',
  uid: 61000,
  table: 10000,
  priority: 1000,
  members: ['866834040000017-socks', '866834040000017-http'],
};

describe('proxy pid files and records', () => {
  it('round trip: the first line is what every older sweep reads, the second the record', () => {
    const text = formatPidFile(4242, 'microsocks', record);
    expect(text.split('\n')[0]).toBe('4242 microsocks');
    expect(parsePidFile(text)).toEqual({ pid: 4242, program: 'microsocks', record });
  });

  it('an older pid file (one line) has no record: it is swept, never adopted', () => {
    expect(parsePidFile('4242 microsocks\n')).toEqual({ pid: 4242, program: 'microsocks' });
  });

  it('a record that does not add up is ignored (the process is swept)', () => {
    const bad: Record<string, unknown>[] = [
      { ...record, pid: 4243 }, // not the pid of the first line
      { ...record, program: 'tinyproxy' },
      { ...record, v: 2 },
      { ...record, egress: '100.65.1.7; rm -rf /' },
      { ...record, iface: 'wwan0 up' },
      { ...record, fingerprint: 'xyz' },
      { ...record, imei: '86683404' },
      { ...record, ports: [] },
      { ...record, ports: [70_000] },
      { ...record, members: ['someone-else'] }, // its own name must be a member
      { ...record, priority: 40_000 },
      { ...record, start: -1 },
    ];
    for (const r of bad)
      expect(
        parsePidFile(`4242 microsocks\n${JSON.stringify(r)}\n`)?.record,
        JSON.stringify(r),
      ).toBeUndefined();
    expect(parsePidFile('4242 microsocks\n{not json\n')?.record).toBeUndefined();
  });

  it('garbage is not a pid file', () => {
    for (const text of ['', 'x microsocks', '1 microsocks', '42', '42 ../../bin/sh'])
      expect(parsePidFile(text), text).toBeUndefined();
  });

  it('the fingerprint changes with anything the process was started with, and only then', () => {
    const base = {
      argvs: [
        ['microsocks', '-i', '0.0.0.0', '-p', '20001', '-b', '100.65.1.7', '-u', 'u1', '-P', 'secret-1'],
      ],
      config: 'Port 20000\nBind 100.65.1.7\nBasicAuth u1 secret-1\n',
      uid: 61000,
      netns: 'farm',
    };
    const f = proxyFingerprint(base);
    expect(f).toMatch(/^[0-9a-f]{64}$/);
    expect(proxyFingerprint({ ...base })).toBe(f);
    expect(proxyFingerprint({ ...base, config: base.config.replace('secret-1', 'secret-2') })).not.toBe(f);
    expect(
      proxyFingerprint({
        ...base,
        argvs: [base.argvs[0]?.map((a) => a.replace('secret-1', 'secret-2')) ?? []],
      }),
    ).not.toBe(f);
    expect(proxyFingerprint({ ...base, uid: 61001 })).not.toBe(f);
    expect(proxyFingerprint({ ...base, netns: undefined })).not.toBe(f);
    // and the password itself is never in it
    expect(f).not.toContain('secret');
  });
});
