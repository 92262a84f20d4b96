import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, open, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDoctor, type Finding, type HostPaths } from '../../src/cli/doctor.js';
import { modemChecks } from '../../src/cli/doctorModems.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { FakeSysfs } from '../../src/sim/fakeSysfs.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { until } from '../helpers/until.js';

let dir: string;
let db: TestDatabase;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-doctor-'));
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

async function put(path: string, text: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
}

const byCheck = (findings: Finding[]) => Object.fromEntries(findings.map((f) => [f.check, f]));

describe('modemfleet doctor', () => {
  it('finds each problem of a badly prepared host and names its fix', async () => {
    const host: HostPaths = {
      sys: join(dir, 'sys'),
      proc: join(dir, 'proc'),
      etc: join(dir, 'etc'),
      lib: join(dir, 'lib'),
    };
    await mkdir(join(host.sys, 'module/option'), { recursive: true });
    await put(join(host.proc, 'sys/net/ipv4/conf/all/rp_filter'), '1\n');
    await put(join(host.proc, 'sys/net/ipv4/conf/default/rp_filter'), '1\n');
    await put(join(host.proc, 'self/status'), 'Name:\tnode\nCapEff:\t0000000000000000\n');
    await put(join(host.proc, '4242/comm'), 'ModemManager\n');
    // a listener on 21005 (0x520D), inside the HTTP port range
    await put(
      join(host.proc, 'net/tcp'),
      '  sl  local_address rem_address   st\n   0: 0100007F:520D 00000000:0000 0A 00000000:00000000\n',
    );
    await put(join(dir, 'not-a-dir'), 'x');
    const configFile = join(dir, 'config.json');
    await writeFile(configFile, JSON.stringify({ dataPlane: { netns: 'farm' }, http: '127.0.0.1:0' }));
    const config = loadConfig({
      env: { DATABASE_URL: db.url, MODEMFLEET_STATE_DIR: join(dir, 'not-a-dir', 'state') },
      file: configFile,
    });
    const f = byCheck(await runDoctor(config, silentLogger, host));
    expect(f['kernel modules']).toMatchObject({
      status: 'fail',
      fix: expect.stringContaining('modprobe qmi_wwan') as unknown,
    });
    expect(f['udev rules']).toMatchObject({
      status: 'fail',
      fix: expect.stringContaining('99-modemfleet.rules') as unknown,
    });
    expect(f['rp_filter']).toMatchObject({
      status: 'fail',
      fix: expect.stringContaining('90-modemfleet.conf') as unknown,
    });
    expect(f['capabilities']?.status).toBe('fail');
    expect(f['capabilities']?.detail).toContain('CAP_NET_ADMIN');
    expect(f['capabilities']?.detail).toContain('CAP_SYS_ADMIN');
    expect(f['ModemManager']).toMatchObject({ status: 'warn' });
    expect(f['proxy port ranges']).toMatchObject({ status: 'warn' });
    expect(f['proxy port ranges']?.detail).toContain('21005');
    expect(f['state dir']?.status).toBe('fail');
    expect(f['database']).toMatchObject({ status: 'ok' });

    // the same host, prepared
    await mkdir(join(host.sys, 'module/qmi_wwan'), { recursive: true });
    await put(join(host.etc, 'udev/rules.d/99-modemfleet.rules'), '# rules\n');
    await put(join(host.proc, 'sys/net/ipv4/conf/all/rp_filter'), '2\n');
    await put(join(host.proc, 'sys/net/ipv4/conf/default/rp_filter'), '2\n');
    await put(join(host.proc, 'self/status'), 'CapEff:\t000001ffffffffff\n');
    const good = byCheck(
      await runDoctor(
        loadConfig({
          env: { DATABASE_URL: db.url, MODEMFLEET_STATE_DIR: join(dir, 'state') },
          file: configFile,
        }),
        silentLogger,
        host,
      ),
    );
    for (const check of [
      'kernel modules',
      'udev rules',
      'rp_filter',
      'capabilities',
      'state dir',
      'database',
    ])
      expect(good[check]?.status, check).toBe('ok');
  });

  it('checks the modems: faults, usbnet mode, a per-port power command, other holders of their ports', async () => {
    const sys = new FakeSysfs(join(dir, 'msys'));
    await sys.start();
    const dev = join(dir, 'mdev');
    await mkdir(dev, { recursive: true });
    for (const n of [
      'ttyUSB0',
      'ttyUSB1',
      'ttyUSB2',
      'ttyUSB3',
      'ttyUSB4',
      'ttyUSB5',
      'ttyUSB6',
      'ttyUSB7',
      'cdc-wdm0',
    ])
      await writeFile(join(dev, n), '');
    await sys.plug({ usbPath: '1-1.2', net: 'wwan0', wdm: 'cdc-wdm0' });
    await sys.plug({ usbPath: '1-1.3', usbnet: 3, ttys: [4, 5, 6, 7], net: 'usb0' });
    await sys.plug({ usbPath: '1-1.4', unconfigured: true });
    // another program holding the first modem's AT port (as ModemManager would)
    const port = await open(join(dev, 'ttyUSB2'), 'r');
    const holder = spawn('sleep', ['60'], { stdio: [port.fd, 'ignore', 'ignore'] });
    const exited = once(holder, 'exit');
    await port.close();
    const host: HostPaths = {
      sys: sys.root,
      proc: '/proc',
      etc: join(dir, 'etc'),
      lib: join(dir, 'lib'),
      dev,
    };
    const configFile = join(dir, 'power-all.json');
    await writeFile(
      configFile,
      JSON.stringify({ powerCycleCommand: ['/usr/sbin/uhubctl', '--action', 'cycle'] }),
    );
    try {
      await until(
        async () => (await readlink(`/proc/${holder.pid}/fd/0`).catch(() => '')).endsWith('ttyUSB2'),
        {
          timeoutMs: 5_000,
          intervalMs: 20,
        },
      );
      const f = byCheck(await modemChecks(loadConfig({ env: {}, file: configFile }), host));
      expect(f['modems']).toMatchObject({ status: 'fail' });
      expect(f['modems']?.detail).toMatch(/1-1\.4: \[usb_resources\].*0000:00:14\.0/);
      expect(f['power command']).toMatchObject({
        status: 'fail',
        fix: expect.stringContaining('"-l","{hub}","-p","{port}"') as unknown,
      });
      expect(f['power command']?.detail).toContain('all 2 modems');
      expect(f['usbnet mode']).toMatchObject({
        status: 'fail',
        fix: expect.stringContaining('AT+QCFG="usbnet",0 then AT+CFUN=1,1') as unknown,
      });
      expect(f['usbnet mode']?.detail).toContain(`1-1.3 (${join(dev, 'ttyUSB6')}) is in RNDIS mode`);
      expect(f['usbnet mode']?.detail).not.toContain('1-1.2');
      expect(f['device holders']).toMatchObject({
        status: 'fail',
        fix: expect.stringContaining('systemctl stop ModemManager') as unknown,
      });
      expect(f['device holders']?.detail).toContain(
        `pid ${holder.pid} (sleep: sleep 60) holds ${join(dev, 'ttyUSB2')}`,
      );

      // fixed: per-port power, the holder gone, the RNDIS modem back in QMI mode, the fault unplugged
      holder.kill('SIGKILL');
      await exited;
      await sys.unplug('1-1.3');
      await sys.unplug('1-1.4');
      await sys.plug({ usbPath: '1-1.3', ttys: [4, 5, 6, 7], net: 'wwan1' });
      await writeFile(
        configFile,
        JSON.stringify({
          powerCycleCommand: ['/usr/sbin/uhubctl', '-l', '{hub}', '-p', '{port}', '-a', 'cycle'],
        }),
      );
      const good = byCheck(await modemChecks(loadConfig({ env: {}, file: configFile }), host));
      expect(good['modems']).toMatchObject({ status: 'ok', detail: '2 detected' });
      expect(good['power command']).toMatchObject({ status: 'ok' });
      expect(good['power command']?.detail).toContain('1-1.2: /usr/sbin/uhubctl -l 1-1 -p 2 -a cycle');
      expect(good['usbnet mode']).toMatchObject({ status: 'ok' });
      expect(good['device holders']?.status).not.toBe('fail');
    } finally {
      if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
      await exited;
      await sys.stop();
    }
  });

  it('reports an unreachable database with a fix', async () => {
    const config = loadConfig({
      env: {
        DATABASE_URL: 'postgres://nobody:x@127.0.0.1:1/none',
        MODEMFLEET_STATE_DIR: join(dir, 's2'),
        MODEMFLEET_HTTP: 'off',
      },
    });
    const f = byCheck(await runDoctor(config, silentLogger));
    expect(f['database']).toMatchObject({
      status: 'fail',
      fix: expect.stringContaining('DATABASE_URL') as unknown,
    });
    expect(f['inspector port']).toBeUndefined();
  });

  it('as a command: a table, or JSON; exit 1 exactly when a check failed', async () => {
    const env = {
      DATABASE_URL: db.url,
      MODEMFLEET_STATE_DIR: join(dir, 'cli'),
      MODEMFLEET_HTTP: '127.0.0.1:0',
    };
    const json = await execa('node', ['bin/modemfleet.js', 'doctor', '--json'], { reject: false, env });
    const findings = JSON.parse(json.stdout) as Finding[];
    expect(findings.map((x) => x.check)).toEqual(
      expect.arrayContaining([
        'kernel modules',
        'rp_filter',
        'nftables',
        'modems',
        'power command',
        'usbnet mode',
        'device holders',
        'database',
      ]),
    );
    expect(json.exitCode).toBe(findings.some((x) => x.status === 'fail') ? 1 : 0);
    const table = await execa('node', ['bin/modemfleet.js', 'doctor'], { reject: false, env });
    expect(table.stdout).toMatch(/^(OK|WARN|FAIL)\s+database\s+/m);
    expect(table.exitCode).toBe(json.exitCode);
  });
});
