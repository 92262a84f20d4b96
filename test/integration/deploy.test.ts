import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { MODELS } from '../../src/detect/models.js';

const deploy = join(import.meta.dirname, '..', '..', 'deploy');

describe('deploy/', () => {
  it('systemd-analyze verify accepts the unit without a warning', async () => {
    const r = await execa('systemd-analyze', ['verify', join(deploy, 'modemfleet.service')], {
      reject: false,
    });
    expect({ code: r.exitCode, stderr: r.stderr, stdout: r.stdout }).toEqual({
      code: 0,
      stderr: '',
      stdout: '',
    });
    const unit = await readFile(join(deploy, 'modemfleet.service'), 'utf8');
    // systemd signals the supervisor only: a restart (SIGTERM) hands the proxies over to the next
    // run, a stop (SIGINT) stops them too; no cgroup-wide SIGKILL may take them down
    expect(unit).toMatch(/^KillMode=process$/m);
    expect(unit).toMatch(/^KillSignal=SIGINT$/m);
    expect(unit).toMatch(/^RestartKillSignal=SIGTERM$/m);
    expect(unit).toMatch(/^Restart=on-failure$/m);
    expect(unit).toMatch(/^ProtectSystem=strict$/m);
    expect(unit).toMatch(/^ReadWritePaths=\/var\/lib\/modemfleet$/m);
    expect(unit).toMatch(/^AmbientCapabilities=.*CAP_NET_ADMIN/m);
    expect(unit).toMatch(/^AmbientCapabilities=.*CAP_SETUID CAP_SETGID/m);
    expect(unit).toMatch(/^User=modemfleet$/m);
    expect(unit).toMatch(/^SupplementaryGroups=dialout postgres$/m);
    // CAP_SYS_ADMIN only through the drop-in, for a configuration with dataPlane.netns
    expect(unit).not.toMatch(/^[A-Za-z]*Capabilit[a-zA-Z]*=.*CAP_SYS_ADMIN/m);
    const dropIn = await readFile(join(deploy, 'modemfleet-netns.conf'), 'utf8');
    expect(dropIn.split('\n')).toEqual(
      expect.arrayContaining([
        '[Service]',
        'AmbientCapabilities=CAP_SYS_ADMIN',
        'CapabilityBoundingSet=CAP_SYS_ADMIN',
      ]),
    );
  });

  it('the echo endpoint unit: verified, no privileges at all, runs `modemfleet echo`', async () => {
    const file = join(deploy, 'modemfleet-echo.service');
    const r = await execa('systemd-analyze', ['verify', file], { reject: false });
    expect({ code: r.exitCode, stderr: r.stderr, stdout: r.stdout }).toEqual({
      code: 0,
      stderr: '',
      stdout: '',
    });
    const unit = await readFile(file, 'utf8');
    expect(unit).toMatch(
      /^ExecStart=node \/opt\/modemfleet\/bin\/modemfleet\.js echo --listen 0\.0\.0\.0:8080$/m,
    );
    for (const line of [
      'DynamicUser=yes',
      'NoNewPrivileges=yes',
      'ProtectSystem=strict',
      'Restart=on-failure',
      'CapabilityBoundingSet=',
      'AmbientCapabilities=',
    ])
      expect(unit.split('\n')).toContain(line);
    expect(unit).not.toMatch(/^(User|Group)=/m);
  });

  it('the udev rules tag every usable model of the detection table and keep them awake', async () => {
    const rules = await readFile(join(deploy, '99-modemfleet.rules'), 'utf8');
    for (const m of MODELS.filter((x) => !x.fault)) {
      const lines = rules.split('\n').filter((l) => l.includes(`ATTR{idVendor}=="${m.vid}"`));
      expect(lines.length, m.model).toBeGreaterThan(0);
      for (const l of lines) expect(l, m.model).toMatch(new RegExp(`idProduct\\}=="[0-9a-f|]*${m.pid}`));
    }
    expect(rules).toMatch(/ATTR\{power\/control\}="on"/);
    expect(rules).toMatch(/TAG\+="modemfleet"/);
  });

  it('the udev rules keep ModemManager off every child of every usable model, also after bind', async () => {
    const rules = (await readFile(join(deploy, '99-modemfleet.rules'), 'utf8'))
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'));
    const ignore = rules.filter((l) => l.includes('ENV{ID_MM_DEVICE_IGNORE}="1"'));
    expect(ignore.length).toBeGreaterThan(0);
    for (const m of MODELS.filter((x) => !x.fault)) {
      const line = ignore.find(
        (l) =>
          l.includes(`ATTRS{idVendor}=="${m.vid}"`) &&
          new RegExp(`ATTRS\\{idProduct\\}=="[0-9a-f|]*${m.pid}`).test(l),
      );
      expect(line, m.model).toBeDefined();
      // every event but remove (a "bind" must not drop it), every subsystem (tty, net, usbmisc)
      expect(line, m.model).toMatch(/^ACTION!="remove",/);
      expect(line, m.model).not.toMatch(/SUBSYSTEM(S)?==|KERNEL==|DRIVER(S)?==/);
    }
    // no rule sets it only on add/change
    for (const l of ignore) expect(l).not.toMatch(/ACTION=="/);
  });

  it('sysctl sets loose reverse-path filtering; the example config is valid', async () => {
    const sysctl = await readFile(join(deploy, '90-modemfleet.conf'), 'utf8');
    const settings: Record<string, string> = Object.fromEntries(
      sysctl
        .split('\n')
        .filter((l) => l.trim() && !l.startsWith('#'))
        .map((l) => l.split('=').map((x) => x.trim()) as [string, string]),
    );
    expect(settings).toMatchObject({
      'net.ipv4.conf.all.rp_filter': '2',
      'net.ipv4.conf.default.rp_filter': '2',
    });
    const config = loadConfig({ env: {}, file: join(deploy, 'config.example.json') });
    expect(config).toMatchObject({
      hostId: 'farm-01',
      http: { host: '127.0.0.1', port: 8080 },
      allowedHosts: ['farm-01.example.com'],
    });
    expect(config.dataPlane).toMatchObject({
      proxyUidBase: 61000,
      egressPolicy: { allow: [], deny: ['198.51.100.0/24'] },
    });
  });
});
