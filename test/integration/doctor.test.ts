import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runDoctor, type Finding, type HostPaths } from '../../src/cli/doctor.js';
import { loadConfig } from '../../src/config.js';
import { silentLogger } from '../../src/log.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

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
      expect.arrayContaining(['kernel modules', 'rp_filter', 'nftables', 'database']),
    );
    expect(json.exitCode).toBe(findings.some((x) => x.status === 'fail') ? 1 : 0);
    const table = await execa('node', ['bin/modemfleet.js', 'doctor'], { reject: false, env });
    expect(table.stdout).toMatch(/^(OK|WARN|FAIL)\s+database\s+/m);
    expect(table.exitCode).toBe(json.exitCode);
  });
});
