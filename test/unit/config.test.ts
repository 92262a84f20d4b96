import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, DEFAULT_POLICY } from '../../src/config.js';
import { ConfigError } from '../../src/util/errors.js';

const dir = mkdtempSync(join(tmpdir(), 'mf-config-'));
const file = (name: string, content: string): string => {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
};
const problems = (fn: () => unknown): readonly string[] => {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
};

describe('loadConfig', () => {
  it('has production and demo defaults', () => {
    const prod = loadConfig({ env: {} });
    expect(prod.stateDir).toBe('/var/lib/modemfleet');
    expect(prod.embeddedPort).toBe(54329);
    expect(prod.policy).toEqual(DEFAULT_POLICY);
    expect(prod.allocation.routingTable).toEqual({ from: 10000, to: 19999 });
    expect(loadConfig({ env: {}, mode: 'demo' }).stateDir).toBe(join(process.cwd(), 'var'));
  });

  it('environment wins over the file', () => {
    const path = file(
      'a.json',
      JSON.stringify({ stateDir: '/srv/a', hostId: 'file-host', embeddedPort: 6000 }),
    );
    const c = loadConfig({ env: { MODEMFLEET_STATE_DIR: '/srv/b', MODEMFLEET_PG_PORT: '7000' }, file: path });
    expect(c).toMatchObject({ stateDir: '/srv/b', hostId: 'file-host', embeddedPort: 7000 });
  });

  it('reports every problem as path: message, all at once', () => {
    const path = file(
      'bad.json',
      JSON.stringify({
        embeddedPort: 'x',
        colour: 'blue',
        allocation: { routingTable: { from: 200, to: 300 }, socks: {} },
        policy: { listenHeartbeatTimeoutMs: -1, nope: 1 },
      }),
    );
    expect(
      problems(() =>
        loadConfig({ env: { MODEMFLEET_API_TOKEN: 'short', MODEMFLEET_HOST_ID: 'bad host!' }, file: path }),
      ),
    ).toEqual([
      'colour: unknown setting',
      'embeddedPort: must be an integer from 1024 to 65535',
      "hostId: 'bad host!' must be 1-63 letters, digits, '.', '_' or '-'",
      'MODEMFLEET_API_TOKEN: must be 16-256 printable characters without spaces',
      'allocation.socks: unknown range',
      "allocation.routingTable: must avoid 0 and the kernel's tables 253-255 (default 10000-19999)",
      'policy.listenHeartbeatTimeoutMs: must be an integer from 1 to 2147483647',
      'policy.nope: unknown setting',
    ]);
  });

  it('names an unreadable or malformed file', () => {
    expect(problems(() => loadConfig({ env: {}, file: join(dir, 'missing.json') }))[0]).toMatch(
      /missing\.json: cannot read \(ENOENT\)/,
    );
    expect(problems(() => loadConfig({ env: {}, file: file('b.json', '{ nope') }))[0]).toMatch(
      /b\.json: not valid JSON/,
    );
    expect(problems(() => loadConfig({ env: {}, file: file('c.json', '[1]') }))[0]).toMatch(
      /c\.json: must be a JSON object/,
    );
  });
});

describe('loadConfig: daemon settings', () => {
  it('reads scan, hotplug, modem timings and the data plane with defaults', () => {
    const path = file(
      'daemon.json',
      JSON.stringify({
        scan: { sysRoot: '/lab/sys', devRoot: '/lab/dev' },
        hotplug: 'watch',
        modem: { signalPollMs: 5000, powerCycle: false },
        dataPlane: {
          netns: 'farm',
          backend: 'microsocks+tinyproxy',
          egress: { url: 'http://198.18.0.1:8080/' },
        },
      }),
    );
    const c = loadConfig({ env: { MODEMFLEET_STATE_DIR: '/srv/mf' }, file: path });
    expect(c.scan).toEqual({ sysRoot: '/lab/sys', devRoot: '/lab/dev' });
    expect(c.hotplug).toBe('watch');
    expect(c.modem).toEqual({ signalPollMs: 5000, powerCycle: false });
    expect(c.dataPlane).toEqual({
      netns: 'farm',
      backend: 'microsocks+tinyproxy',
      listen: '0.0.0.0',
      prefix: 32,
      runDir: '/srv/mf/run',
      dns: [],
      rulePriorityBase: 1000,
      proxyUidBase: 61000,
      egress: { urls: ['http://198.18.0.1:8080/'], intervalMs: 60000, samples: 2 },
      egressPolicy: { allow: [], deny: [] },
      qmiLinks: true,
      trafficAccounting: true,
      openPortOffset: 2000,
    });
  });

  it("the allowlist's companion ports (openPortOffset) must not meet the port ranges", () => {
    const meets = file('open-ports.json', JSON.stringify({ dataPlane: { openPortOffset: 10000 } }));
    // 21000-21999 + 10000 = 31000-31999: the SOCKS range
    expect(() => loadConfig({ env: {}, file: meets })).toThrow(
      /dataPlane\.openPortOffset: .*must stay within 65535 and not meet/,
    );
    const fine = file('open-ports-ok.json', JSON.stringify({ dataPlane: { openPortOffset: 3000 } }));
    expect(loadConfig({ env: {}, file: fine }).dataPlane?.openPortOffset).toBe(3000);
  });

  it('egress policy: allow and deny lists read; bad entries, unknown keys and a policy without uids named', () => {
    const good = file(
      'egress-policy.json',
      JSON.stringify({
        dataPlane: {
          egressPolicy: { allow: ['192.168.5.10', '2001:db8::/32'], deny: ['203.0.113.0/24'] },
        },
      }),
    );
    const c = loadConfig({ env: {}, file: good });
    expect(c.dataPlane?.egressPolicy).toEqual({
      allow: ['192.168.5.10', '2001:db8::/32'],
      deny: ['203.0.113.0/24'],
    });
    expect(c.dataPlane?.proxyUidBase).toBe(61000);
    const off = file(
      'egress-off.json',
      JSON.stringify({ dataPlane: { proxyUidBase: null, egressPolicy: null } }),
    );
    expect(loadConfig({ env: {}, file: off }).dataPlane).toMatchObject({
      proxyUidBase: undefined,
      egressPolicy: null,
    });
    const bad = file(
      'egress-bad.json',
      JSON.stringify({
        dataPlane: {
          egressPolicy: { allow: ['10.0.0.1/8', 'example.com', '10.0.0.1-10.0.0.9'], deny: 'x', extra: [] },
        },
      }),
    );
    expect(problems(() => loadConfig({ env: {}, file: bad }))).toEqual([
      'dataPlane.egressPolicy.extra: unknown setting',
      expect.stringMatching(/^dataPlane\.egressPolicy\.allow\[0\]: .*host bits set/),
      expect.stringMatching(/^dataPlane\.egressPolicy\.allow\[1\]: not an IPv4\/IPv6 address or prefix/),
      expect.stringMatching(/^dataPlane\.egressPolicy\.allow\[2\]: not an IPv4\/IPv6 address or prefix/),
      'dataPlane.egressPolicy.deny: must be an array of IPv4/IPv6 addresses or prefixes',
    ]);
    const noUids = file('egress-nouid.json', JSON.stringify({ dataPlane: { proxyUidBase: null } }));
    expect(problems(() => loadConfig({ env: {}, file: noUids }))).toEqual([
      expect.stringMatching(/^dataPlane\.egressPolicy: needs proxyUidBase/),
    ]);
    const nobody = file('egress-nobody.json', JSON.stringify({ dataPlane: { proxyUidBase: 65000 } }));
    expect(problems(() => loadConfig({ env: {}, file: nobody }))).toEqual([
      expect.stringMatching(/^dataPlane\.proxyUidBase: the proxies' uids 65000-65999 .* 65534 \(nobody\)/),
    ]);
  });

  it('refuses bad daemon settings, naming each', () => {
    const path = file(
      'bad-daemon.json',
      JSON.stringify({
        scan: { sysRoot: 'relative' },
        hotplug: 'sometimes',
        modem: { signalPollMs: -1, bogus: 1, powerCycle: true },
        powerCycleCommand: 'uhubctl -a cycle',
        dataPlane: {
          netns: 'a b',
          backend: 'squid',
          listen: '::',
          dns: ['x'],
          egress: { url: 'https://x' },
          extra: 1,
        },
      }),
    );
    const found = problems(() => loadConfig({ env: {}, file: path }));
    for (const p of [
      'scan.sysRoot',
      'hotplug',
      'modem.signalPollMs',
      'modem.bogus',
      'powerCycleCommand',
      'dataPlane.netns',
      'dataPlane.backend',
      'dataPlane.listen',
      'dataPlane.dns',
      'dataPlane.egress',
      'dataPlane.extra',
    ])
      expect(found.some((x) => x.startsWith(p))).toBe(true);
  });

  it('traffic accounting: on by default, off with false; its policy keys read; a bad value named', () => {
    const off = loadConfig({
      env: {},
      file: file(
        'traffic.json',
        JSON.stringify({
          dataPlane: { trafficAccounting: false },
          policy: { trafficReadMs: 2000, trafficMinuteRetentionDays: 3 },
        }),
      ),
    });
    expect(off.dataPlane?.trafficAccounting).toBe(false);
    expect(off.policy).toMatchObject({
      trafficReadMs: 2000,
      trafficMinuteRetentionDays: 3,
      trafficSampleMs: 60_000,
    });
    expect(
      problems(() =>
        loadConfig({
          env: {},
          file: file(
            'traffic-bad.json',
            JSON.stringify({ dataPlane: { trafficAccounting: 'yes' }, policy: { trafficReadMs: 0 } }),
          ),
        }),
      ),
    ).toEqual([
      'policy.trafficReadMs: must be an integer from 1 to 2147483647',
      'dataPlane.trafficAccounting: must be true or false',
    ]);
  });

  it('powerCycleCommand is a template: unknown placeholders are named', () => {
    const good = file(
      'power.json',
      JSON.stringify({
        powerCycleCommand: ['/usr/sbin/uhubctl', '-l', '{hub}', '-p', '{port}', '-a', 'cycle', '-d', '5'],
      }),
    );
    expect(loadConfig({ env: {}, file: good }).powerCycleCommand).toContain('{hub}');
    const bad = file(
      'power-bad.json',
      JSON.stringify({ powerCycleCommand: ['/usr/sbin/uhubctl', '-l', '{hubb}', '-p', '{port}{x}'] }),
    );
    const found = problems(() => loadConfig({ env: {}, file: bad }));
    expect(found).toHaveLength(1);
    expect(found[0]).toMatch(/^powerCycleCommand: unknown placeholder\(s\) \{hubb\}, \{x\}/);
  });

  it('APN by operator, usbnet switch, MTU and the USB reset rung: read, and refused when wrong', () => {
    const good = file(
      'qmi.json',
      JSON.stringify({
        apn: 'internet',
        apnByOperator: { '26202': 'web.vodafone.de', '310410': 'broadband' },
        switchUsbnet: true,
        mtu: 1430,
        modem: { usbReset: false },
      }),
    );
    expect(loadConfig({ env: {}, file: good })).toMatchObject({
      apn: 'internet',
      apnByOperator: { '26202': 'web.vodafone.de', '310410': 'broadband' },
      switchUsbnet: true,
      mtu: 1430,
      modem: { usbReset: false },
    });
    expect(loadConfig({ env: {} })).toMatchObject({ apnByOperator: {}, switchUsbnet: false, mtu: 1500 });
    const bad = file(
      'qmi-bad.json',
      JSON.stringify({
        apnByOperator: { '262': 'x', '26203': 'bad apn' },
        switchUsbnet: 'yes',
        mtu: 100,
        modem: { usbReset: 1 },
      }),
    );
    const found = problems(() => loadConfig({ env: {}, file: bad }));
    for (const p of ['apnByOperator.262', 'apnByOperator.26203', 'switchUsbnet', 'mtu', 'modem.usbReset'])
      expect(found.some((x) => x.startsWith(p))).toBe(true);
  });
});

describe('loadConfig: the inspector (issue 18)', () => {
  it('allowedHosts from the file or MODEMFLEET_ALLOWED_HOSTS; HTTP limits in the policy', () => {
    expect(loadConfig({ env: {} }).allowedHosts).toEqual([]);
    const path = file(
      'hosts.json',
      JSON.stringify({
        allowedHosts: ['farm.example.com', '*.farm.lan', '10.0.0.5', '::1'],
        policy: { httpRequestTimeoutMs: 20_000, httpMaxConnections: 64, commandQueueMax: 4, linkBurst: 1 },
      }),
    );
    const c = loadConfig({ env: {}, file: path });
    expect(c.allowedHosts).toEqual(['farm.example.com', '*.farm.lan', '10.0.0.5', '::1']);
    expect(c.policy).toMatchObject({
      httpRequestTimeoutMs: 20_000,
      httpMaxConnections: 64,
      commandQueueMax: 4,
    });
    expect(c.policy.httpHeadersTimeoutMs).toBe(DEFAULT_POLICY.httpHeadersTimeoutMs);
    expect(
      loadConfig({ env: { MODEMFLEET_ALLOWED_HOSTS: 'a.example, 192.0.2.1' }, file: path }).allowedHosts,
    ).toEqual(['a.example', '192.0.2.1']);
  });

  it('refuses bad host names and a headers timeout beyond the request timeout, naming each', () => {
    const path = file(
      'bad-hosts.json',
      JSON.stringify({
        allowedHosts: ['ok.example', 'http://evil/'],
        policy: { httpHeadersTimeoutMs: 30_000, httpRequestTimeoutMs: 10_000, httpMaxConnections: 0 },
      }),
    );
    const found = problems(() => loadConfig({ env: {}, file: path }));
    expect(found).toContainEqual(expect.stringMatching(/^allowedHosts: at most 64 host names or addresses/));
    expect(found).toContain('policy.httpHeadersTimeoutMs: must not exceed policy.httpRequestTimeoutMs');
    expect(found).toContainEqual(expect.stringMatching(/^policy\.httpMaxConnections: must be an integer/));
    expect(problems(() => loadConfig({ env: { MODEMFLEET_ALLOWED_HOSTS: 'a b' } }))).toEqual([
      expect.stringMatching(/^MODEMFLEET_ALLOWED_HOSTS: /),
    ]);
    expect(problems(() => loadConfig({ env: {}, file: file('h2.json', '{"allowedHosts":"x"}') }))).toEqual([
      expect.stringMatching(/^allowedHosts: /),
    ]);
  });

  it('a host is never dead between two heartbeats; the listen URL goes with DATABASE_URL', () => {
    expect(loadConfig({ env: {} }).policy.hostDeadAfterMs).toBe(60_000);
    expect(
      problems(() =>
        loadConfig({
          env: {},
          file: file('dead.json', '{"policy":{"hostHeartbeatMs":10000,"hostDeadAfterMs":20000}}'),
        }),
      ),
    ).toEqual([
      expect.stringMatching(/^policy\.hostDeadAfterMs: must be at least 3 × policy\.hostHeartbeatMs/),
    ]);
    expect(problems(() => loadConfig({ env: { DATABASE_LISTEN_URL: 'postgres://a@db/x' } }))).toEqual([
      expect.stringMatching(/^databaseListenUrl: goes with DATABASE_URL/),
    ]);
    const c = loadConfig({
      env: { DATABASE_URL: 'postgres://a@pooler:6432/x', DATABASE_LISTEN_URL: 'postgres://a@db:5432/x' },
    });
    expect(c.databaseListenUrl).toBe('postgres://a@db:5432/x');
  });
});
