import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ipJson } from '../../src/net/ip.js';
import { readTable } from '../../src/net/nft.js';
import { EGRESS_TABLE } from '../../src/net/egressPolicy.js';
import { processAlive, procStat } from '../../src/net/proxyRecord.js';
import { rotateCredentials } from '../../src/store/credentials.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { ECHO_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';
import { SimLab } from '../../src/sim/simLab.js';
import { createTestDatabase, journalHoles, type TestDatabase } from '../helpers/db.js';
import { until, type UntilOptions } from '../helpers/until.js';

/**
 * Issue 21 item 8: upgrades and restarts that customers do not notice. `modemfleet run` with the
 * data plane (real microsocks and tinyproxy, the lab's namespaces and carrier), SIGTERMed in the
 * middle of slow downloads through two modems' ports and started again on the same state: the
 * downloads complete with every byte, the same proxy processes serve on (adopted, not restarted),
 * the modems are online again, and an adopted proxy that is killed is restarted. A proxy whose
 * recorded settings no longer match (its credentials rotated while the supervisor was down) is
 * replaced, and one whose modem is gone is killed; SIGINT is the full stop, and so is
 * `modemfleet stop-proxies` once the supervisor has handed over and is gone.
 */

const N = 3;
const TRICKLE_PORT = 8081;
const BYTES = 1024 * 1024;
/**
 * Longer than a supervisor takes to stop and the next to adopt, even on a busy machine; once that
 * has been seen, the trickle server is told to send the rest (SIGUSR2).
 */
const DOWNLOAD_MS = 120_000;

let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
let trickle: ResultPromise | undefined;
const children: ResultPromise[] = [];

const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));
const runDir = (): string => join(dir, 'run');

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-handover-'));
  await chmod(dir, 0o711); // as root the proxies run under their own uids and read their configs below it
  net = new NetLab({ name: `mh${randomBytes(2).toString('hex')}`, modems: N });
  await net.start();
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 41).map((p, i) => ({
      ...p,
      subnet: net.subnet(i),
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
  // the slow download, on the lab's internet (the carrier namespace, beside the echo server)
  trickle = execa(
    'ip',
    [
      'netns',
      'exec',
      net.carrier,
      process.execPath,
      '--import',
      'tsx',
      here('../fixtures/net/trickleServer.ts'),
      ECHO_ADDRESS,
      String(TRICKLE_PORT),
    ],
    { reject: false, detached: true, cleanup: false },
  );
  await new Promise<void>((resolve, reject) => {
    trickle?.stdout?.once('data', () => resolve());
    void trickle?.then((r) => reject(new Error(`trickle server exited: ${String(r.stderr)}`)));
  });
  await writeFile(
    join(dir, 'config.json'),
    JSON.stringify({
      scan: lab.scan,
      hotplug: 'watch',
      spoolFsync: 'never',
      modem: { probeRetryMs: 100, registrationPollMs: 100, signalPollMs: 1000, backoffBaseMs: 100 },
      dataPlane: {
        netns: net.farm,
        backend: 'microsocks+tinyproxy',
        prefix: 24,
        runDir: runDir(),
        egress: { url: net.echoUrl, intervalMs: 2000 },
        // the egress policy (on by default): the lab's internet is the echo server's address
        egressPolicy: { allow: [ECHO_ADDRESS] },
        // the lab's links are veth pairs, not qmi_wwan: nothing to set raw-IP on
        qmiLinks: false,
      },
    }),
  );
}, 60_000);

afterAll(async () => {
  for (const c of children.splice(0)) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
  if (trickle?.pid) {
    try {
      process.kill(-trickle.pid, 'SIGKILL');
    } catch {
      // gone
    }
    await trickle;
  }
  await net?.killInFarm();
  await lab?.stop();
  await net?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

afterEach(async () => {
  // a failed test must not leave its daemon or its proxies to the next one
  for (const c of children.splice(0)) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
  await net.killInFarm();
  for (let i = 0; i < N; i++) if (!lab.modem(i).plugged) await lab.plug(i);
});

interface Daemon {
  child: ResultPromise;
  /** Everything it logged so far (pino JSON lines). */
  output: () => string;
}

function daemon(): Daemon {
  const child = execa('node', ['bin/modemfleet.js', 'run', '--config', join(dir, 'config.json')], {
    reject: false,
    // a handover or a full stop on a busy machine may take longer than execa's 5 s
    forceKillAfterDelay: false,
    env: {
      DATABASE_URL: db.url,
      MODEMFLEET_HOST_ID: 'handover-host',
      MODEMFLEET_STATE_DIR: join(dir, 'state'),
      MODEMFLEET_HTTP: '127.0.0.1:0',
    },
  });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
  return { child, output: () => out };
}

/** `modemfleet stop-proxies` on the daemon's configuration. */
function stopProxies(): ResultPromise {
  return execa('node', ['bin/modemfleet.js', 'stop-proxies', '--config', join(dir, 'config.json')], {
    reject: false,
    env: { MODEMFLEET_HOST_ID: 'handover-host', MODEMFLEET_STATE_DIR: join(dir, 'state') },
  });
}

/** A daemon's exit after `signal`: code 0, and what it logged. */
async function stopWith(d: Daemon, signal: 'SIGTERM' | 'SIGINT'): Promise<string> {
  d.child.kill(signal);
  const result = await d.child;
  const i = children.indexOf(d.child);
  if (i >= 0) void children.splice(i, 1);
  expect({ code: result.exitCode, signal: result.signal }).toEqual({ code: 0, signal: undefined });
  return d.output();
}

const waiting = (what: string, timeoutMs: number): UntilOptions => ({
  timeoutMs,
  intervalMs: 200,
  message: async () => {
    const state =
      await db.sql`select imei, state, reason, host(wan_ip) as wan_ip, seq from modems order by imei`;
    return `${what}: ${JSON.stringify(state)}`;
  },
});

interface ModemRow {
  imei: string;
  state: string;
  seq: number;
  wan_ip: string;
  socks_port: number;
  http_port: number;
  proxy_user: string;
  proxy_password: string;
  slot: number;
}

const modems = () =>
  db.sql<ModemRow[]>`
    select m.imei, m.state, m.seq::int, host(m.wan_ip) as wan_ip, a.socks_port, a.http_port,
      a.proxy_user, a.proxy_password, a.slot
    from modems m join allocations a using (imei) order by m.imei`;

async function serving(m: ModemRow): Promise<boolean> {
  return (
    m.state === 'online' &&
    (await net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password)) === m.wan_ip &&
    (await net.probe('http', m.http_port, m.proxy_user, m.proxy_password)) === m.wan_ip
  );
}

async function allServing(imeis?: readonly string[]): Promise<boolean> {
  const rows = (await modems()).filter((m) => !imeis || imeis.includes(m.imei));
  if (rows.length !== (imeis?.length ?? N)) return false;
  for (const m of rows) if (!(await serving(m))) return false;
  return true;
}

/** The pid a proxy's pid file names (its first line), or undefined. */
async function pidOf(imei: string, kind: 'socks' | 'http'): Promise<number | undefined> {
  const text = await readFile(join(runDir(), `${imei}-${kind}.pid`), 'utf8').catch(() => '');
  const pid = Number(text.split(/\s+/)[0]);
  return Number.isInteger(pid) && pid > 1 ? pid : undefined;
}

/** The proxy processes of a modem as they run now: pid and start time (which pids alone are not). */
async function proxyOf(imei: string): Promise<{ socks: number; http: number; starts: number[] }> {
  const socks = await pidOf(imei, 'socks');
  const http = await pidOf(imei, 'http');
  if (socks === undefined || http === undefined) throw new Error(`no pid files for ${imei}`);
  const starts = await Promise.all([socks, http].map(async (p) => (await procStat(p))?.start ?? -1));
  return { socks, http, starts };
}

async function stillRunning(p: { socks: number; http: number; starts: number[] }): Promise<boolean> {
  return (await processAlive(p.socks, p.starts[0] ?? -1)) && (await processAlive(p.http, p.starts[1] ?? -1));
}

/** The farm namespace's proxy processes (pids). */
async function proxyPids(): Promise<number[]> {
  const inFarm = String((await execa('ip', ['netns', 'pids', net.farm], { reject: false })).stdout)
    .split('\n')
    .map(Number)
    .filter((p) => p > 0);
  const out: number[] = [];
  for (const pid of inFarm) {
    const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
    if (/^(microsocks|tinyproxy)$/.test(comm.trim()) && (await procStat(pid))?.state !== 'Z') out.push(pid);
  }
  return out;
}

/** A slow download through one proxy port, from inside the farm namespace, into `file`. */
function download(kind: 'socks' | 'http', m: ModemRow, file: string): ResultPromise {
  const proxy = `${kind === 'socks' ? 'socks5' : 'http'}://${m.proxy_user}:${m.proxy_password}@127.0.0.1:${
    kind === 'socks' ? m.socks_port : m.http_port
  }`;
  const url = `http://${ECHO_ADDRESS}:${TRICKLE_PORT}/trickle?bytes=${BYTES}&ms=${DOWNLOAD_MS}`;
  const child = execa(
    'ip',
    [
      'netns',
      'exec',
      net.farm,
      'curl',
      '-sS',
      '--max-time',
      '170',
      '--proxy',
      proxy,
      '-o',
      file,
      '-w',
      '%{http_code} %{size_download}',
      url,
    ],
    { reject: false },
  );
  children.push(child);
  return child;
}

/** Every byte as the trickle server sent it (byte k is k % 251). */
async function intact(file: string): Promise<boolean> {
  const data = await readFile(file);
  if (data.length !== BYTES) return false;
  for (let k = 0; k < data.length; k++) if (data[k] !== k % 251) return false;
  return true;
}

const sizeOf = async (file: string): Promise<number> => (await stat(file).catch(() => undefined))?.size ?? 0;

/** Lines of a daemon's log with this message, as parsed JSON. */
function logged(output: string, msg: string): Record<string, unknown>[] {
  return output
    .split('\n')
    .filter((l) => l.includes(msg))
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    })
    .filter((l) => l['msg'] === msg);
}

const ADOPTED = "adopted the previous run's proxy: its connections live on";
const REPLACED = 'replacing the proxy the previous run left: it is not what this run starts';

describe('supervisor restart under load (SIGTERM hands over, the next run adopts)', () => {
  it('open downloads through the ports survive a restart; the same proxies serve on; a killed adopted proxy is restarted', async () => {
    const first = daemon();
    await until(allServing, waiting('serving', 120_000));
    const before = await modems();
    const [a, b] = [...before] as [ModemRow, ModemRow];
    const procsA = await proxyOf(a.imei);
    const procsB = await proxyOf(b.imei);

    // two slow downloads in flight: SOCKS through modem a, HTTP through modem b
    const fileA = join(dir, 'a.bin');
    const fileB = join(dir, 'b.bin');
    const downloadA = download('socks', a, fileA);
    const downloadB = download('http', b, fileB);
    await until(
      async () => (await sizeOf(fileA)) > 0 && (await sizeOf(fileB)) > 0,
      waiting('bytes flowing', 30_000),
    );

    // what systemd's restart sends
    const firstLog = await stopWith(first, 'SIGTERM');
    expect(logged(firstLog, 'modemfleet stopped')[0]).toMatchObject({
      signal: 'SIGTERM',
      proxies: 'left serving for the next run',
    });
    expect(await stillRunning(procsA)).toBe(true);
    expect(await stillRunning(procsB)).toBe(true);
    // routing and the egress policy stay: the proxies serve new connections while no supervisor runs
    expect(await serving(a)).toBe(true);
    expect(await readTable('inet', EGRESS_TABLE, { netns: net.farm })).not.toBeNull();

    const second = daemon();
    await until(
      async () => {
        const rows = await modems();
        return (
          rows.every((m, i) => m.seq > (before[i]?.seq ?? Infinity) && m.state === 'online') &&
          logged(second.output(), ADOPTED).length === N
        );
      },
      waiting('online again, every proxy adopted', 120_000),
    );
    // adopted mid-download: both were still running when the next run took their proxies over
    expect(downloadA.exitCode ?? null).toBeNull();
    expect(downloadB.exitCode ?? null).toBeNull();
    expect(await sizeOf(fileA)).toBeLessThan(BYTES);
    expect(logged(second.output(), REPLACED)).toEqual([]);
    // the rest of the bytes now, through the adopted processes
    if (trickle?.pid) process.kill(trickle.pid, 'SIGUSR2');

    const [resultA, resultB] = await Promise.all([downloadA, downloadB]);
    expect({ code: resultA.exitCode, out: String(resultA.stdout) }).toEqual({ code: 0, out: `200 ${BYTES}` });
    expect({ code: resultB.exitCode, out: String(resultB.stdout) }).toEqual({ code: 0, out: `200 ${BYTES}` });
    expect(await intact(fileA)).toBe(true);
    expect(await intact(fileB)).toBe(true);

    // the same processes serve on: pid and start time as before the restart
    expect(await proxyOf(a.imei)).toEqual(procsA);
    expect(await proxyOf(b.imei)).toEqual(procsB);
    expect(await stillRunning(procsA)).toBe(true);
    expect(await until(allServing, waiting('serving after adoption', 60_000))).toBe(true);
    expect(await proxyPids()).toHaveLength(2 * N);

    // an adopted proxy is no child of this supervisor, and it still notices it dying
    process.kill(procsA.socks, 'SIGKILL');
    await until(
      async () => {
        const pid = await pidOf(a.imei, 'socks');
        return pid !== undefined && pid !== procsA.socks && (await serving((await modems())[0] as ModemRow));
      },
      waiting('the killed adopted proxy restarted', 60_000),
    );
    // the proxy machine restarts the modem's pair as one (as for its own children)
    expect(await stillRunning(procsA)).toBe(false);
    expect(await stillRunning(await proxyOf(a.imei))).toBe(true);
    expect(await proxyOf(b.imei)).toEqual(procsB);

    // SIGINT: the full stop, nothing left
    await stopWith(second, 'SIGINT');
    expect(await proxyPids()).toEqual([]);
    const rules = await ipJson<{ priority?: number }>(['rule', 'show'], { netns: net.farm });
    for (const m of before) expect(rules.filter((r) => r.priority === 1000 + 2 * m.slot)).toEqual([]);
    expect(await readTable('inet', EGRESS_TABLE, { netns: net.farm })).toBeNull();
    expect(await journalHoles(db.sql)).toEqual([]);
  }, 420_000);

  it('a proxy whose credentials were rotated while the supervisor was down is replaced, one whose modem is gone is killed, the rest adopted', async () => {
    const first = daemon();
    await until(allServing, waiting('serving', 120_000));
    const [rotated, kept, gone] = [...(await modems())] as [ModemRow, ModemRow, ModemRow];
    const procsRotated = await proxyOf(rotated.imei);
    const procsKept = await proxyOf(kept.imei);
    const procsGone = await proxyOf(gone.imei);
    await stopWith(first, 'SIGTERM');

    // while no supervisor runs: a new password, and one modem unplugged
    const fresh = await rotateCredentials(db.sql, rotated.imei, 'test');
    await lab.unplug(lab.modems.findIndex((m) => m.imei === gone.imei));
    expect(await stillRunning(procsGone)).toBe(true);

    const second = daemon();
    await until(
      async () => allServing([rotated.imei, kept.imei]),
      waiting('the plugged modems serving again', 120_000),
    );
    // the rotated one: old processes gone, new ones serve the new password only
    expect(await stillRunning(procsRotated)).toBe(false);
    const now = await proxyOf(rotated.imei);
    expect(now.socks).not.toBe(procsRotated.socks);
    const row = (await modems()).find((m) => m.imei === rotated.imei) as ModemRow;
    expect(row.proxy_password).toBe(fresh.password);
    expect(await net.probe('socks', row.socks_port, row.proxy_user, rotated.proxy_password)).toBeNull();
    expect(logged(second.output(), REPLACED).map((l) => l['modem'])).toEqual([rotated.imei]);
    // the untouched one is adopted
    expect(await proxyOf(kept.imei)).toEqual(procsKept);
    expect(logged(second.output(), ADOPTED).map((l) => l['modem'])).toEqual([kept.imei]);
    // the unplugged one's proxy is killed and its routing taken away (fail closed)
    await until(
      async () => !(await stillRunning(procsGone)),
      waiting("the gone modem's proxy killed", 30_000),
    );
    const rules = await ipJson<{ priority?: number }>(['rule', 'show'], { netns: net.farm });
    expect(rules.filter((r) => r.priority === 1000 + 2 * gone.slot)).toEqual([]);
    expect(await proxyPids()).toHaveLength(4);

    // the full stop of what a supervisor handed over, while none runs: refused while one does
    const refused = await stopProxies();
    expect(refused.exitCode).toBe(1);
    expect(String(refused.stderr)).toMatch(/a modemfleet supervisor \(pid \d+\) uses/);
    expect(await proxyPids()).toHaveLength(4);
    await stopWith(second, 'SIGTERM');
    expect(await proxyPids()).toHaveLength(4);
    const stopped = await stopProxies();
    expect({ code: stopped.exitCode, out: JSON.parse(String(stopped.stdout)) as unknown }).toEqual({
      code: 0,
      out: { stopped: 4, routes: 2 },
    });
    expect(await proxyPids()).toEqual([]);
    const left = await ipJson<{ priority?: number }>(['rule', 'show'], { netns: net.farm });
    for (const m of [rotated, kept]) expect(left.filter((r) => r.priority === 1000 + 2 * m.slot)).toEqual([]);
    expect(await readTable('inet', EGRESS_TABLE, { netns: net.farm })).toBeNull();
  }, 360_000);
});
