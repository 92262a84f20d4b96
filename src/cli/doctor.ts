import { access, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { System } from '../system.js';
import { coerceError } from '../util/errors.js';
import { modemChecks } from './doctorModems.js';
import { findProgram } from '../util/fs.js';

/** One finding of `modemfleet doctor`: what was checked, what was seen, and how to fix it. */
export interface Finding {
  check: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
  fix?: string;
}

/** Where the host is read from (a fake tree in tests). */
export interface HostPaths {
  sys: string;
  proc: string;
  etc: string;
  lib: string;
  /** Where the modems' device nodes are (`/dev`). */
  dev?: string;
}

export const REAL_HOST: HostPaths = { sys: '/sys', proc: '/proc', etc: '/etc', lib: '/lib', dev: '/dev' };

const CAP = { NET_ADMIN: 12, NET_RAW: 13, SETUID: 7, SETGID: 6, SYS_ADMIN: 21 } as const;

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
}

function kernelModules(host: HostPaths): Promise<Finding> {
  return (async () => {
    const wanted = ['option', 'qmi_wwan'];
    const missing: string[] = [];
    for (const m of wanted) if (!(await exists(join(host.sys, 'module', m)))) missing.push(m);
    return missing.length === 0
      ? { check: 'kernel modules', status: 'ok', detail: 'option and qmi_wwan are loaded' }
      : {
          check: 'kernel modules',
          status: 'fail',
          detail: `not loaded: ${missing.join(', ')} (the EC25's serial ports and network interface need them)`,
          fix: `modprobe ${missing.join(' ')} && printf '%s\\n' ${missing.join(' ')} > /etc/modules-load.d/modemfleet.conf`,
        };
  })();
}

async function udevRules(host: HostPaths): Promise<Finding> {
  const places = [
    join(host.etc, 'udev/rules.d/99-modemfleet.rules'),
    join(host.lib, 'udev/rules.d/99-modemfleet.rules'),
  ];
  for (const p of places)
    if (await exists(p)) return { check: 'udev rules', status: 'ok', detail: `installed (${p})` };
  return {
    check: 'udev rules',
    status: 'fail',
    detail: 'not installed: modems may autosuspend and ModemManager may probe their ports',
    fix: 'cp deploy/99-modemfleet.rules /etc/udev/rules.d/ && udevadm control --reload && udevadm trigger',
  };
}

async function rpFilter(host: HostPaths): Promise<Finding> {
  const read = async (scope: string) =>
    (await readText(join(host.proc, 'sys/net/ipv4/conf', scope, 'rp_filter')))?.trim();
  const all = await read('all');
  const def = await read('default');
  if (all === undefined)
    return { check: 'rp_filter', status: 'warn', detail: 'cannot read net.ipv4.conf.all.rp_filter' };
  if (all === '1' || def === '1')
    return {
      check: 'rp_filter',
      status: 'fail',
      detail: `strict reverse-path filtering (all=${all}, default=${def ?? '?'}) drops answers on the modems' links`,
      fix: 'cp deploy/90-modemfleet.conf /etc/sysctl.d/ && sysctl --system',
    };
  return { check: 'rp_filter', status: 'ok', detail: `all=${all}, default=${def ?? '?'}` };
}

async function capabilities(config: Config, host: HostPaths): Promise<Finding> {
  const status = await readText(join(host.proc, 'self/status'));
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status ?? '')?.[1];
  if (!hex) return { check: 'capabilities', status: 'warn', detail: 'cannot read CapEff of this process' };
  const eff = BigInt(`0x${hex}`);
  const has = (bit: number) => (eff & (1n << BigInt(bit))) !== 0n;
  const needed: [string, number][] = [];
  if (config.dataPlane) {
    needed.push(['CAP_NET_ADMIN', CAP.NET_ADMIN], ['CAP_NET_RAW', CAP.NET_RAW]);
    if (config.dataPlane.proxyUidBase !== undefined)
      needed.push(['CAP_SETUID', CAP.SETUID], ['CAP_SETGID', CAP.SETGID]);
    if (config.dataPlane.netns) needed.push(['CAP_SYS_ADMIN', CAP.SYS_ADMIN]);
  }
  if (needed.length === 0)
    return { check: 'capabilities', status: 'ok', detail: 'no data plane configured: none needed' };
  const missing = needed.filter(([, bit]) => !has(bit)).map(([name]) => name);
  return missing.length === 0
    ? { check: 'capabilities', status: 'ok', detail: `${needed.map(([n]) => n).join(', ')} present` }
    : {
        check: 'capabilities',
        status: 'fail',
        detail: `missing ${missing.join(', ')} (routing and proxies need them)`,
        fix: 'run as root, or through deploy/modemfleet.service (AmbientCapabilities)',
      };
}

/** A program on PATH: ok with its path, or the finding for its absence. */
async function tool(check: string, program: string, missing: Omit<Finding, 'check'>): Promise<Finding> {
  const found = await findProgram(program);
  return found ? { check, status: 'ok', detail: found } : { check, ...missing };
}

async function programs(config: Config): Promise<Finding[]> {
  const findings: Finding[] = [];
  const three = await findProgram(config.threeProxyPath ?? '3proxy');
  const micro = (await findProgram('microsocks')) && (await findProgram('tinyproxy'));
  const backend = config.dataPlane?.backend ?? 'auto';
  if (three) findings.push({ check: '3proxy', status: 'ok', detail: three });
  else
    findings.push({
      check: '3proxy',
      status: backend === '3proxy' ? 'fail' : 'warn',
      detail: `not found (${config.threeProxyPath ?? 'PATH'})${micro && backend !== '3proxy' ? '; microsocks + tinyproxy will be used' : ''}`,
      fix: 'build 3proxy (https://github.com/3proxy/3proxy) and set MODEMFLEET_3PROXY to its path',
    });
  if (!three && !micro && config.dataPlane)
    findings.push({
      check: 'proxy programs',
      status: 'fail',
      detail: 'neither 3proxy nor microsocks + tinyproxy is installed',
      fix: 'apt-get install microsocks tinyproxy (or install 3proxy)',
    });
  findings.push(
    await tool('iproute2', 'ip', {
      status: 'fail',
      detail: '`ip` not found',
      fix: 'apt-get install iproute2',
    }),
    await tool('nftables', 'nft', {
      // the egress policy (what a proxy customer may reach) is nftables: without nft, no proxy starts
      status: config.dataPlane?.egressPolicy ? 'fail' : 'warn',
      detail: '`nft` not found: rules that go through src/net/nft.ts (the egress policy) cannot be applied',
      fix: 'apt-get install nftables',
    }),
  );
  if (config.dataPlane)
    findings.push(
      await tool('setpriv', 'setpriv', {
        status: 'fail',
        detail: 'not found: proxies and the embedded PostgreSQL start through it (own uid, no capabilities)',
        fix: 'apt-get install util-linux',
      }),
    );
  if (config.hotplug === 'udev')
    findings.push(
      await tool('udevadm', 'udevadm', {
        status: 'warn',
        detail: 'not found: hotplug falls back to the periodic rescan',
        fix: 'apt-get install udev',
      }),
    );
  return findings;
}

async function modemManager(host: HostPaths): Promise<Finding> {
  let entries: string[];
  try {
    entries = await readdir(host.proc);
  } catch {
    return { check: 'ModemManager', status: 'ok', detail: 'cannot list processes' };
  }
  for (const pid of entries.filter((e) => /^\d+$/.test(e))) {
    const comm = (await readText(join(host.proc, pid, 'comm')))?.trim();
    if (comm === 'ModemManager')
      return {
        check: 'ModemManager',
        status: 'warn',
        detail: `running (pid ${pid}): it probes modem ports and races modemfleet for them`,
        fix: 'systemctl disable --now ModemManager (or keep the udev rules: they set ID_MM_DEVICE_IGNORE)',
      };
  }
  return { check: 'ModemManager', status: 'ok', detail: 'not running' };
}

async function stateDir(config: Config): Promise<Finding> {
  const probe = join(config.stateDir, `.doctor-${process.pid}`);
  try {
    await mkdir(config.stateDir, { recursive: true, mode: 0o711 });
    await writeFile(probe, 'ok');
    await rm(probe, { force: true });
    return { check: 'state dir', status: 'ok', detail: `${config.stateDir} is writable` };
  } catch (err) {
    return {
      check: 'state dir',
      status: 'fail',
      detail: `${config.stateDir}: ${coerceError(err).message}`,
      fix: `mkdir -p ${config.stateDir} && chown modemfleet: ${config.stateDir} (or set MODEMFLEET_STATE_DIR)`,
    };
  }
}

function portFree(host: string, port: number): Promise<NodeJS.ErrnoException | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err));
    server.listen(port, host, () => server.close(() => resolve(null)));
  });
}

/** Listening TCP ports on this host (from /proc/net/tcp and tcp6). */
async function listeningPorts(host: HostPaths): Promise<Set<number>> {
  const ports = new Set<number>();
  for (const file of ['net/tcp', 'net/tcp6']) {
    const text = await readText(join(host.proc, file));
    for (const line of (text ?? '').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === '0A') ports.add(parseInt(cols[1]?.split(':')[1] ?? '', 16));
    }
  }
  return ports;
}

async function ports(config: Config, host: HostPaths): Promise<Finding[]> {
  const findings: Finding[] = [];
  if (config.http) {
    const err = await portFree(config.http.host, config.http.port);
    findings.push(
      err === null
        ? { check: 'inspector port', status: 'ok', detail: `${config.http.host}:${config.http.port} is free` }
        : {
            check: 'inspector port',
            status: err.code === 'EADDRINUSE' ? 'warn' : 'fail',
            detail: `${config.http.host}:${config.http.port}: ${err.code ?? err.message}${err.code === 'EADDRINUSE' ? ' (fine if modemfleet itself is running)' : ''}`,
            fix: 'set "http" in the config (or MODEMFLEET_HTTP) to a free HOST:PORT',
          },
    );
  }
  const listening = await listeningPorts(host);
  const taken: number[] = [];
  for (const range of [config.allocation.httpPort, config.allocation.socksPort])
    for (const p of listening) if (p >= range.from && p <= range.to) taken.push(p);
  findings.push(
    taken.length === 0
      ? { check: 'proxy port ranges', status: 'ok', detail: 'no listener inside the allocation ranges' }
      : {
          check: 'proxy port ranges',
          status: 'warn',
          detail: `${taken.length} port(s) in the allocation ranges are listening (${taken.slice(0, 5).join(', ')}${taken.length > 5 ? ', ...' : ''}); fine if they are modemfleet's proxies`,
          fix: 'move "allocation" ranges away from other services',
        },
  );
  return findings;
}

async function database(config: Config, log: Logger): Promise<Finding> {
  const system = new System(config, {
    application: 'modemfleet-doctor',
    max: 1,
    connectAttempts: 2,
    // the embedded server of the running farm, never one of its own (doctor changes nothing)
    embedded: 'running',
    migrations: 'none',
    log,
  });
  try {
    await system.start();
    const [row] = await system.sql<
      { version: string }[]
    >`select current_setting('server_version') as version`;
    return {
      check: 'database',
      status: 'ok',
      detail: `PostgreSQL ${row?.version ?? '?'} ${config.databaseUrl ? 'at DATABASE_URL' : '(embedded)'} answers`,
    };
  } catch (err) {
    const e = coerceError(err) as Error & { code?: string };
    if (e.code === 'no_farm_running')
      return {
        check: 'database',
        status: 'warn',
        detail: 'the embedded PostgreSQL is not running (the farm starts it): not checked',
        fix: 'start the farm (systemctl start modemfleet) and run doctor again, or set DATABASE_URL',
      };
    return {
      check: 'database',
      status: 'fail',
      detail: `${e.code ? `${e.code}: ` : ''}${e.message}`.slice(0, 300),
      fix: config.databaseUrl
        ? 'check DATABASE_URL (host, port, credentials) and that the server accepts connections'
        : 'see the error code in README.md ("Errors an operator will see"), or set DATABASE_URL',
    };
  } finally {
    await system.stop().catch(() => undefined);
  }
}

/** Every check, in a stable order. */
export async function runDoctor(
  config: Config,
  log: Logger,
  host: HostPaths = REAL_HOST,
): Promise<Finding[]> {
  // package.json's engines: Node 22 or newer (22 and 24 are the supported LTS lines)
  const [major = 0] = process.versions.node.split('.').map(Number);
  const node: Finding =
    major >= 22
      ? { check: 'node', status: 'ok', detail: `Node ${process.versions.node}` }
      : {
          check: 'node',
          status: 'fail',
          detail: `Node ${process.versions.node}`,
          fix: 'install Node 22 or newer: bash scripts/install-node.sh (as root)',
        };
  return [
    node,
    await kernelModules(host),
    await udevRules(host),
    await rpFilter(host),
    await capabilities(config, host),
    ...(await programs(config)),
    await modemManager(host),
    ...(await modemChecks(config, host)),
    await stateDir(config),
    ...(await ports(config, host)),
    await database(config, log),
  ];
}

export function formatFindings(findings: readonly Finding[]): string {
  const width = Math.max(...findings.map((f) => f.check.length));
  const lines: string[] = [];
  for (const f of findings) {
    lines.push(`${f.status.toUpperCase().padEnd(4)}  ${f.check.padEnd(width)}  ${f.detail}`);
    if (f.fix && f.status !== 'ok') lines.push(`${' '.repeat(width + 8)}fix: ${f.fix}`);
  }
  const failed = findings.filter((f) => f.status === 'fail').length;
  const warned = findings.filter((f) => f.status === 'warn').length;
  lines.push(
    '',
    failed
      ? `${failed} problem(s) to fix, ${warned} warning(s)`
      : `no problems${warned ? `, ${warned} warning(s)` : ''}`,
  );
  return lines.join('\n');
}
