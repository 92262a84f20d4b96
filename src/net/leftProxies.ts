import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import { ModemfleetError } from '../util/errors.js';
import { EGRESS_TABLE } from './egressPolicy.js';
import { ipJson, type IpOptions } from './ip.js';
import { deleteTable } from './nft.js';
import { removeRoute } from './routing.js';
import { runDirHolder } from './runDirLock.js';
import {
  isProxy,
  listening,
  parsePidFile,
  procStat,
  processAlive,
  stopProcess,
  type ProxyRecord,
} from './proxyRecord.js';

/** One process a previous run left serving, as its record describes it. */
export interface LeftProcess {
  name: string;
  program: string;
  pid: number;
  start: number;
  ports: number[];
}

/** One modem's proxy left by a previous run: every one of its processes checked and serving. */
export interface LeftModem {
  imei: string;
  fingerprint: string;
  egress: string;
  iface?: string | undefined;
  uid?: number | undefined;
  table?: number | undefined;
  priority?: number | undefined;
  /** In the order of the record's `members`. */
  processes: LeftProcess[];
}

export interface FindLeftOptions {
  /** Check that the recorded egress address is still on the recorded link (routing on). */
  checkLink: boolean;
  ip?: IpOptions | undefined;
  log?: Logger | undefined;
}

/**
 * What a previous run left in `runDir`, checked before anything starts. A modem's proxy is kept (for
 * its modem's data plane to adopt) only when every process its records name is there, is the very
 * process that was started (pid and start time), is still that proxy program, listens on each of
 * its recorded ports, and (routing on) its address is still on its link. Everything else is
 * killed with its process group and its pid files removed, as the start-up sweep always did: a
 * pid file of an older version, a half-gone modem, a record that does not add up. Fail closed: what
 * is not kept is not left running.
 */
export async function findLeftProxies(
  runDir: string,
  options: FindLeftOptions,
): Promise<{ modems: LeftModem[]; killed: number }> {
  const log = options.log ?? silentLogger;
  let files: string[];
  try {
    files = (await readdir(runDir)).filter((f) => f.endsWith('.pid'));
  } catch {
    return { modems: [], killed: 0 };
  }
  let killed = 0;
  const groups = new Map<string, ProxyRecord[]>();
  for (const f of files) {
    const path = join(runDir, f);
    const file = parsePidFile(await readFile(path, 'utf8').catch(() => ''));
    const record = file?.record;
    if (record && `${record.name}.pid` === f) {
      groups.set(record.imei, [...(groups.get(record.imei) ?? []), record]);
      continue;
    }
    // no record (an older version, or not one of ours): swept as always
    if (file && (await isProxy(file.pid, file.program))) {
      const start = (await procStat(file.pid))?.start;
      if (start !== undefined) await stopProcess(file.pid, start, 0);
      killed++;
      log.warn({ pid: file.pid, program: file.program, pidFile: f }, 'killed a proxy left by a previous run');
    }
    await rm(path, { force: true });
  }
  const modems: LeftModem[] = [];
  for (const [imei, records] of groups) {
    const problem = await groupProblem(records, options);
    if (problem === null) {
      const first = records[0] as ProxyRecord;
      const byName = new Map(records.map((r) => [r.name, r]));
      modems.push({
        imei,
        fingerprint: first.fingerprint,
        egress: first.egress,
        iface: first.iface,
        uid: first.uid,
        table: first.table,
        priority: first.priority,
        processes: first.members.map((name) => {
          const r = byName.get(name) as ProxyRecord;
          return { name, program: r.program, pid: r.pid, start: r.start, ports: r.ports };
        }),
      });
      continue;
    }
    for (const r of records) {
      if ((await processAlive(r.pid, r.start)) && (await isProxy(r.pid, r.program))) {
        await stopProcess(r.pid, r.start, 0);
        killed++;
      }
      await rm(join(runDir, `${r.name}.pid`), { force: true });
    }
    log.warn({ imei, problem }, 'killed the proxy a previous run left: it cannot be adopted');
  }
  return { modems, killed };
}

/** Why one modem's left proxy cannot be kept, or null. */
async function groupProblem(records: ProxyRecord[], options: FindLeftOptions): Promise<string | null> {
  const first = records[0];
  if (!first) return 'no record';
  const same = (r: ProxyRecord): boolean =>
    r.fingerprint === first.fingerprint &&
    r.egress === first.egress &&
    r.iface === first.iface &&
    r.uid === first.uid &&
    r.table === first.table &&
    r.priority === first.priority &&
    r.members.join(',') === first.members.join(',');
  if (!records.every(same)) return 'its processes were started with different settings';
  const names = records.map((r) => r.name).sort();
  if (names.join(',') !== [...first.members].sort().join(','))
    return `its processes are not all there (found ${names.join(', ')}; started ${first.members.join(', ')})`;
  for (const r of records) {
    if (!(await processAlive(r.pid, r.start))) return `${r.name} (pid ${r.pid}) is gone`;
    if (!(await isProxy(r.pid, r.program))) return `pid ${r.pid} is not ${r.program} any more`;
    for (const port of r.ports)
      if (!(await listening(r.pid, port))) return `${r.name} does not listen on port ${port}`;
  }
  if (options.checkLink && first.iface) {
    const links = await ipJson<{ addr_info?: { local?: string }[] }>(
      ['-4', 'addr', 'show', 'dev', first.iface],
      options.ip,
    ).catch(() => undefined);
    if (!links?.some((l) => l.addr_info?.some((a) => a.local === first.egress)))
      return `${first.egress} is not on ${first.iface} any more`;
  }
  return null;
}

/**
 * The full stop of what a supervisor left serving, while none runs (`modemfleet stop-proxies`):
 * every process a pid file of `runDir` names that is still that proxy program is stopped with its
 * group (SIGTERM, then SIGKILL), its routing (from its record) removed, its pid file and config
 * removed, and the egress policy table deleted. Refused (`supervisor_running`) while a supervisor
 * uses the run dir: it would restart them, or they would be pulled from under it.
 */
export async function stopLeftProxies(
  runDir: string,
  options: { netns?: string | undefined; ip?: IpOptions | undefined; log?: Logger | undefined } = {},
): Promise<{ stopped: number; routes: number }> {
  const log = options.log ?? silentLogger;
  const holder = await runDirHolder(runDir);
  if (holder !== undefined)
    throw new ModemfleetError(
      'supervisor_running',
      `a modemfleet supervisor (pid ${holder}) uses ${runDir}: stop it (systemctl stop modemfleet stops its proxies too) instead`,
    );
  let files: string[] = [];
  try {
    files = (await readdir(runDir)).filter((f) => f.endsWith('.pid'));
  } catch {
    // no run dir: nothing was left
  }
  const ipOptions = { ...options.ip, netns: options.netns };
  const routes = new Map<string, { table: number; priority: number }>();
  const imeis = new Set<string>();
  let stopped = 0;
  for (const f of files) {
    const path = join(runDir, f);
    const file = parsePidFile(await readFile(path, 'utf8').catch(() => ''));
    const record = file?.record;
    if (record?.table !== undefined && record.priority !== undefined)
      routes.set(`${record.table}/${record.priority}`, { table: record.table, priority: record.priority });
    if (record) imeis.add(record.imei);
    if (file && (await isProxy(file.pid, file.program))) {
      const start = record?.start ?? (await procStat(file.pid))?.start;
      if (start !== undefined && (await processAlive(file.pid, start))) {
        await stopProcess(file.pid, start);
        stopped++;
        log.info({ pid: file.pid, program: file.program }, 'stopped a proxy left serving');
      }
    }
    await rm(path, { force: true });
  }
  for (const imei of imeis)
    for (const ext of ['cfg', 'conf']) await rm(join(runDir, `${imei}.${ext}`), { force: true });
  for (const route of routes.values()) await removeRoute(route, ipOptions);
  await deleteTable('inet', EGRESS_TABLE, { netns: options.netns });
  return { stopped, routes: routes.size };
}
