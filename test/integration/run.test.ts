import { chmod, chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { run, unprivilegedPrefix } from '../../src/process/run.js';
import { freePort } from '../../src/util/ports.js';

/**
 * The one process module starts a child with nothing (issue 18): its own uid and gid, no
 * supplementary groups, no capabilities (not even ambient ones inherited from a daemon that holds
 * them, as the systemd unit's does), no_new_privs, and an environment without our secrets.
 */

const root = process.getuid?.() === 0;
const script = fileURLToPath(new URL('../fixtures/process/childStatus.ts', import.meta.url));
const clusterScript = fileURLToPath(new URL('../fixtures/process/startCluster.ts', import.meta.url));
/** The capabilities of deploy/modemfleet.service before issue 18 (CapAmb 0x2030e1 as measured). */
const UNIT_CAPS = '+net_admin,+net_raw,+setuid,+setgid,+sys_admin,+chown,+kill';

const field = (status: string, name: string): string =>
  new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';

describe.runIf(root)('children start with nothing', () => {
  it('as root: the child runs as its uid with every capability set empty and no_new_privs', async () => {
    const r = await run('cat', ['/proc/self/status'], { user: { uid: 61_950, gid: 61_951 } });
    expect(r.ok).toBe(true);
    expect(field(r.stdout, 'Uid')).toBe('61950\t61950\t61950\t61950');
    expect(field(r.stdout, 'Gid')).toBe('61951\t61951\t61951\t61951');
    expect(field(r.stdout, 'Groups')).toBe('');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb', 'CapBnd'])
      expect(field(r.stdout, set), set).toBe('0000000000000000');
    expect(field(r.stdout, 'NoNewPrivs')).toBe('1');
    expect(unprivilegedPrefix({ uid: 61_950, gid: 61_950 })).toContain('--bounding-set=-all');
  });

  it('under a daemon with ambient capabilities (the unit): the child keeps none, and no secret', async () => {
    const r = await execa(
      'setpriv',
      [
        '--reuid=61960',
        '--regid=61960',
        '--clear-groups',
        `--inh-caps=${UNIT_CAPS}`,
        `--ambient-caps=${UNIT_CAPS}`,
        '--',
        process.execPath,
        '--import',
        'tsx',
        script,
        '61961',
      ],
      {
        reject: false,
        env: {
          PATH: process.env['PATH'] ?? '/usr/bin:/bin',
          MODEMFLEET_API_TOKEN: 'secret-token-0123456789',
          DATABASE_URL: 'postgres://u:pw@127.0.0.1/db',
        },
        extendEnv: false,
      },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const { parent, child } = JSON.parse(r.stdout) as { parent: string; child: string };
    // the premise: the daemon holds them, ambient, as the unit grants them
    expect(field(parent, 'CapAmb')).toBe('00000000002030e1');
    expect(field(parent, 'CapEff')).toBe('00000000002030e1');
    const [status = '', environ = ''] = child.split('---\n');
    expect(field(status, 'Uid')).toBe('61961\t61961\t61961\t61961');
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb'])
      expect(field(status, set), set).toBe('0000000000000000');
    expect(field(status, 'NoNewPrivs')).toBe('1');
    expect(environ).toMatch(/^PATH=/m);
    expect(environ).not.toMatch(/MODEMFLEET_API_TOKEN|DATABASE_URL|secret-token|postgres:\/\//);
  }, 30_000);

  it('the embedded PostgreSQL under the unit: its own uid (postgres), no capabilities, no secret', async () => {
    const pg = await execa('id', ['-u', 'postgres'], { reject: false });
    const pgGid = await execa('id', ['-g', 'postgres'], { reject: false });
    if (pg.exitCode !== 0) return; // created by the embedded cluster as root on first use
    const dir = await mkdtemp(join(tmpdir(), 'mf-pgunit-'));
    try {
      await chmod(dir, 0o711);
      await chown(dir, 61_963, 61_963);
      const child = execa(
        'setpriv',
        [
          '--reuid=61963',
          '--regid=61963',
          `--groups=${pgGid.stdout.trim()}`,
          `--inh-caps=${UNIT_CAPS}`,
          `--ambient-caps=${UNIT_CAPS}`,
          '--',
          process.execPath,
          '--import',
          'tsx',
          clusterScript,
          join(dir, 'postgres'),
          String(await freePort()),
        ],
        {
          reject: false,
          stdin: 'pipe',
          env: {
            PATH: process.env['PATH'] ?? '/usr/bin:/bin',
            MODEMFLEET_API_TOKEN: 'secret-token-0123456789',
          },
          extendEnv: false,
          timeout: 60_000,
        },
      );
      let first = '';
      for await (const line of createInterface({ input: child.stdout })) {
        first = line;
        break;
      }
      let status = '';
      let environ = '';
      try {
        const { pid } = JSON.parse(first || '{}') as { pid?: number };
        status = await readFile(`/proc/${pid}/status`, 'utf8');
        environ = await readFile(`/proc/${pid}/environ`, 'utf8');
      } finally {
        child.stdin.end('stop\n');
      }
      const r = await child;
      expect(r.exitCode, String(r.stderr).slice(-2000)).toBe(0);
      const uid = pg.stdout.trim();
      expect(field(status, 'Uid')).toBe(`${uid}\t${uid}\t${uid}\t${uid}`);
      for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapAmb'])
        expect(field(status, set), set).toBe('0000000000000000');
      expect(environ).toMatch(/LC_ALL=C/);
      expect(environ).not.toMatch(/MODEMFLEET_API_TOKEN|secret-token|DATABASE_URL/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);

  it("as ourselves ('self'): the same uid, but no capability", async () => {
    const r = await execa(
      'setpriv',
      [
        '--reuid=61962',
        '--regid=61962',
        '--clear-groups',
        `--inh-caps=${UNIT_CAPS}`,
        `--ambient-caps=${UNIT_CAPS}`,
        '--',
        process.execPath,
        '--import',
        'tsx',
        script,
        'self',
      ],
      { reject: false, env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin' }, extendEnv: false },
    );
    expect(r.exitCode, r.stderr).toBe(0);
    const { child } = JSON.parse(r.stdout) as { child: string };
    expect(field(child, 'Uid')).toBe('61962\t61962\t61962\t61962');
    expect(field(child, 'CapEff')).toBe('0000000000000000');
    expect(field(child, 'CapAmb')).toBe('0000000000000000');
  }, 30_000);
});
