import { createHash } from 'node:crypto';
import { readFile, readdir, readlink } from 'node:fs/promises';
import { isIPv4 } from 'node:net';
import { basename } from 'node:path';
import { sleep } from '../util/time.js';

/**
 * What a proxy process leaves in the run dir: its pid file. The first line is `PID PROGRAM`, what
 * every version's start-up sweep reads; the second a JSON record with what the next run needs to
 * adopt the process instead of replacing it (a supervisor restart or upgrade then leaves the
 * customers' open connections alone): the process's start time (pids are reused, pid and start
 * time together are not), its ports, and from the modem's data plane the modem, its address and
 * link, the proxy's uid and routing, and a fingerprint of everything the process was started with
 * (argv, config text, uid: the password is inside, so new credentials never match an old process).
 * A pid file without a valid record is swept as before: the process is killed.
 */

/** The data plane's part of a record: the same in every process of one modem. */
export interface ProxyRecordMeta {
  imei: string;
  /** SHA-256 (hex) of what the process was started with: `proxyFingerprint`. */
  fingerprint: string;
  /** The address outgoing connections use (the modem's WAN address). */
  egress: string;
  /** The modem's link (its egress admission and routing name it). */
  iface?: string | undefined;
  /** The proxy's own uid (egress policy, uidrange rule). */
  uid?: number | undefined;
  /** Routing table and rule priority (removed when the process is not adopted). */
  table?: number | undefined;
  priority?: number | undefined;
  /** Every pid file name stem of the modem's proxy: all of them, or none, are adopted. */
  members: string[];
}

export interface ProxyRecord extends ProxyRecordMeta {
  v: 1;
  /** Pid file name stem, e.g. `866834040000017-socks`. */
  name: string;
  pid: number;
  program: string;
  /** /proc/PID/stat field 22 (clock ticks after boot). */
  start: number;
  /** TCP ports the process listens on. */
  ports: number[];
}

export interface PidFile {
  pid: number;
  program: string;
  /** Absent for files of older versions, or when the record does not check out. */
  record?: ProxyRecord | undefined;
}

/** The proxy programs modemfleet runs (3proxy in production; microsocks and tinyproxy from Debian). */
export const PROXY_PROGRAMS = ['3proxy', 'microsocks', 'tinyproxy'] as const;

const NAME = /^[A-Za-z0-9_.-]{1,100}$/;
const IFACE = /^[A-Za-z0-9._-]{1,15}$/;
const PROGRAM = /^[A-Za-z0-9_.+-]{1,64}$/;

const isInt = (v: unknown, min: number, max: number): v is number =>
  typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
const optionalInt = (v: unknown, min: number, max: number): boolean => v === undefined || isInt(v, min, max);

/** The record of a pid file's second line, or undefined when it is not one this version wrote. */
export function parseRecord(line: string, pid: number, program: string): ProxyRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const r = value as Record<string, unknown>;
  const ok =
    r['v'] === 1 &&
    typeof r['name'] === 'string' &&
    NAME.test(r['name']) &&
    r['pid'] === pid &&
    r['program'] === program &&
    isInt(r['start'], 0, Number.MAX_SAFE_INTEGER) &&
    Array.isArray(r['ports']) &&
    r['ports'].length >= 1 &&
    r['ports'].length <= 4 &&
    r['ports'].every((p) => isInt(p, 1, 65_535)) &&
    typeof r['imei'] === 'string' &&
    /^\d{15}$/.test(r['imei']) &&
    typeof r['fingerprint'] === 'string' &&
    /^[0-9a-f]{64}$/.test(r['fingerprint']) &&
    typeof r['egress'] === 'string' &&
    isIPv4(r['egress']) &&
    (r['iface'] === undefined || (typeof r['iface'] === 'string' && IFACE.test(r['iface']))) &&
    optionalInt(r['uid'], 1, 2 ** 31 - 2) &&
    optionalInt(r['table'], 1, 2 ** 31 - 1) &&
    optionalInt(r['priority'], 1, 32_000) &&
    Array.isArray(r['members']) &&
    r['members'].length >= 1 &&
    r['members'].length <= 4 &&
    r['members'].every((m) => typeof m === 'string' && NAME.test(m)) &&
    r['members'].includes(r['name']);
  return ok ? (r as unknown as ProxyRecord) : undefined;
}

/** Reads a pid file's text: `PID PROGRAM`, then optionally the record. Undefined: not a pid file. */
export function parsePidFile(text: string): PidFile | undefined {
  const [first = '', second] = text.split('\n');
  const [pidText, program] = first.trim().split(/\s+/);
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 1 || !program || !PROGRAM.test(program)) return undefined;
  const record = second?.trim() ? parseRecord(second.trim(), pid, program) : undefined;
  return { pid, program, ...(record ? { record } : {}) };
}

export function formatPidFile(pid: number, program: string, record?: ProxyRecord): string {
  return `${pid} ${program}\n${record ? `${JSON.stringify(record)}\n` : ''}`;
}

/**
 * What a modem's proxy was started with, as one hash: the argv of each of its processes
 * (microsocks's password is there), its config text (3proxy's and tinyproxy's password is there),
 * its uid and namespace. A left proxy is adopted only when the hash of what this run would start is
 * the same: another address, password, port or setting never matches.
 */
export function proxyFingerprint(start: {
  argvs: readonly (readonly string[])[];
  config: string | null;
  uid: number | undefined;
  netns: string | undefined;
}): string {
  return createHash('sha256')
    .update(
      JSON.stringify({
        argvs: start.argvs,
        config: start.config,
        uid: start.uid ?? null,
        netns: start.netns ?? null,
      }),
    )
    .digest('hex');
}

/** State and start time of a process (/proc/PID/stat), or undefined when there is none. */
export async function procStat(pid: number): Promise<{ state: string; start: number } | undefined> {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (text === undefined) return undefined;
  // `pid (comm) state ...`: comm may hold spaces and parentheses, the last ')' ends it
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const start = Number(fields[19]);
  const state = fields[0] ?? '?';
  return Number.isInteger(start) ? { state, start } : undefined;
}

/**
 * The process `pid` that started at `start` still runs (not a zombie: one whose parent went away
 * may wait for a reaper that never comes, and serves nothing).
 */
export async function processAlive(pid: number, start: number): Promise<boolean> {
  const stat = await procStat(pid);
  return stat !== undefined && stat.start === start && stat.state !== 'Z' && stat.state !== 'X';
}

/** The pid still belongs to the program the pid file names (pids are reused). */
export async function isProgram(pid: number, program: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return basename(cmdline.split('\0')[0] ?? '') === program;
}

/** The pid still belongs to the proxy program the pid file names (pids are reused). */
export async function isProxy(pid: number, program: string | undefined): Promise<boolean> {
  if (!program || !(PROXY_PROGRAMS as readonly string[]).includes(program)) return false;
  return isProgram(pid, program);
}

/**
 * Process `pid` itself listens on TCP `port` (read from /proc, so it works inside any network
 * namespace): the listening socket in its namespace's table must be one of its own descriptors,
 * not another program's that happens to hold the port.
 */
export async function listening(pid: number, port: number): Promise<boolean> {
  const table = await readFile(`/proc/${pid}/net/tcp`, 'utf8').catch(() => '');
  const hex = port.toString(16).toUpperCase().padStart(4, '0');
  // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode: state 0A is LISTEN
  const inodes = table
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hex}`) === true && f[3] === '0A')
    .map((f) => f[9]);
  if (inodes.length === 0) return false;
  const fds = await readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const target = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
    if (inodes.some((inode) => target === `socket:[${inode}]`)) return true;
  }
  return false;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

/**
 * Stops a process that is not our child (one left by a previous run): SIGTERM to its group, SIGKILL
 * after `timeoutMs` (0: SIGKILL at once), each only while that very process (pid and start time) still runs, so a reused
 * pid is never signalled. Resolves once it is gone (or a zombie); false when it outlived the SIGKILL.
 */
export async function stopProcess(pid: number, start: number, timeoutMs = 3_000): Promise<boolean> {
  const steps: [NodeJS.Signals, number][] = [
    ['SIGTERM', timeoutMs],
    ['SIGKILL', 2_000],
  ];
  // 0: SIGKILL at once (what the start-up check does to what it does not keep)
  for (const [signal, waitMs] of timeoutMs > 0 ? steps : steps.slice(1)) {
    if (!(await processAlive(pid, start))) return true;
    signalGroup(pid, signal);
    const deadline = Date.now() + waitMs;
    while (Date.now() < deadline) {
      if (!(await processAlive(pid, start))) return true;
      await sleep(25);
    }
  }
  return !(await processAlive(pid, start));
}
