import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { getViaHttpProxy, getViaSocks5 } from '../../src/net/proxyClient.js';
import { microsocksArgs, renderTinyproxy, type ProxySpec } from '../../src/net/proxyConfig.js';
import { findLeftProxies } from '../../src/net/leftProxies.js';
import { ProxyProcess, accepts, cmdlineHolds } from '../../src/net/proxyProcess.js';
import { processAlive, type ProxyRecordMeta } from '../../src/net/proxyRecord.js';
import { freePort } from '../../src/util/ports.js';
import { ignoreTimeout, until } from '../helpers/until.js';

/** Real Debian proxies on loopback: 127.0.10.x addresses stand for modem WAN addresses. */

let dir: string;
let echo: Server;
let echoUrl: string;
const procs: ProxyProcess[] = [];

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-proxy-'));
  echo = createServer((req, res) => res.end(req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '?'));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const address = echo.address();
  echoUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/`;
});
afterEach(async () => {
  for (const p of procs.splice(0)) await p.stop();
  await new Promise((r) => echo.close(r));
  await rm(dir, { recursive: true, force: true });
  const left = await execa('pgrep', ['-f', dir], { reject: false });
  expect(left.stdout).toBe('');
});

async function spec(egress: string): Promise<ProxySpec> {
  return {
    imei: '866834040000017',
    listen: '127.0.0.1',
    httpPort: await freePort(),
    socksPort: await freePort(),
    user: 'm1',
    password: 'secret-pass-1',
    egress,
    dns: [],
  };
}

async function microsocks(s: ProxySpec, name = 'm-socks'): Promise<ProxyProcess> {
  const p = new ProxyProcess({
    name,
    argv: ['microsocks', ...microsocksArgs(s)],
    runDir: dir,
    ports: [{ host: s.listen, port: s.socksPort }],
    secrets: [s.password],
  });
  procs.push(p);
  await p.start();
  return p;
}

async function tinyproxy(s: ProxySpec): Promise<ProxyProcess> {
  const conf = join(dir, 'tinyproxy.conf');
  await writeFile(conf, renderTinyproxy(s));
  const p = new ProxyProcess({
    name: 'm-http',
    argv: ['tinyproxy', '-d', '-c', conf],
    runDir: dir,
    ports: [{ host: s.listen, port: s.httpPort }],
  });
  procs.push(p);
  await p.start();
  return p;
}

const endpoint = (s: ProxySpec, port: number) => ({
  host: s.listen,
  port,
  user: s.user,
  password: s.password,
});

describe('proxy processes (microsocks, tinyproxy)', () => {
  it('each port egresses from its own address', async () => {
    const a = await spec('127.0.10.11');
    const b = await spec('127.0.10.12');
    await microsocks(a, 'a-socks');
    await microsocks(b, 'b-socks');
    await tinyproxy(a);
    expect((await getViaSocks5(endpoint(a, a.socksPort), echoUrl)).body).toBe('127.0.10.11');
    expect((await getViaSocks5(endpoint(b, b.socksPort), echoUrl)).body).toBe('127.0.10.12');
    const viaHttp = await getViaHttpProxy(endpoint(a, a.httpPort), echoUrl);
    expect(viaHttp).toEqual({ status: 200, body: '127.0.10.11' });
  });

  it('wrong credentials are refused', async () => {
    const s = await spec('127.0.10.13');
    await microsocks(s);
    await tinyproxy(s);
    await expect(
      getViaSocks5({ ...endpoint(s, s.socksPort), password: 'nope' }, echoUrl),
    ).rejects.toMatchObject({
      code: 'socks_auth_failed',
    });
    // tinyproxy 1.11 answers 401, not 407, to bad proxy credentials
    const refused = await getViaHttpProxy({ ...endpoint(s, s.httpPort), password: 'nope' }, echoUrl);
    expect(refused.status).toBe(401);
  });

  it('ready means listening: a program that exits at once is reported with its stderr', async () => {
    const s = await spec('127.0.10.14');
    const conf = join(dir, 'bad.conf');
    await writeFile(conf, 'Port 99999999\nNonsense yes\n');
    const p = new ProxyProcess({
      name: 'bad',
      argv: ['tinyproxy', '-d', '-c', conf],
      runDir: dir,
      ports: [{ host: s.listen, port: s.httpPort }],
      readyTimeoutMs: 3_000,
    });
    await expect(p.start()).rejects.toMatchObject({ code: 'proxy_exited' });
    expect(await readdir(dir)).not.toContain('bad.pid');
  });

  it('stop closes the port and removes the pid file; a crash is seen through exited()', async () => {
    const s = await spec('127.0.10.15');
    const p = await microsocks(s);
    expect(await readdir(dir)).toContain('m-socks.pid');
    const exited = p.exited();
    process.kill(p.pid ?? 0, 'SIGKILL');
    expect((await exited).signal).toBe('SIGKILL');
    await p.stop();
    expect(await readdir(dir)).not.toContain('m-socks.pid');
    const q = await microsocks(s, 'again');
    await q.stop();
    expect(await accepts(s.listen, s.socksPort)).toBe(false);
  });

  it('start-up check: an instance an older version left (a pid file without record) is killed before anything starts', async () => {
    const s = await spec('127.0.10.16');
    // a supervisor that died without stopping its proxy: the process and its pid file remain
    const orphan = execa('microsocks', microsocksArgs(s), { detached: true, reject: false, cleanup: false });
    await writeFile(join(dir, 'orphan.pid'), `${orphan.pid} microsocks\n`);
    await writeFile(join(dir, 'stale.pid'), `999999 microsocks\n`);
    await writeFile(join(dir, 'not-ours.pid'), `${process.pid} node\n`);
    await until(() => accepts(s.listen, s.socksPort), { timeoutMs: 2_000, intervalMs: 20 }).catch(
      ignoreTimeout,
    );
    expect(await findLeftProxies(dir, { checkLink: false })).toEqual({ modems: [], killed: 1 });
    const result = await orphan;
    expect(result.signal).toBe('SIGKILL');
    expect(await readdir(dir)).toEqual([]);
  });

  it('no password in process arguments once ready: microsocks blanks -P; a program that keeps it is stopped', async () => {
    const s = await spec('127.0.10.17');
    const p = await microsocks(s);
    const pid = p.pid ?? 0;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    expect(cmdline.split('\0')[0]).toBe('microsocks');
    expect(cmdline).not.toContain(s.password);
    expect(await cmdlineHolds(pid, [s.password])).toBe(false);
    // the check can fail: the same check on a program that keeps its arguments
    const port = await freePort();
    const keeper = new ProxyProcess({
      name: 'keeper',
      argv: [
        process.execPath,
        '-e',
        `require('node:net').createServer().listen(${port}, '127.0.0.1')`,
        s.password,
      ],
      runDir: dir,
      ports: [{ host: '127.0.0.1', port }],
      secrets: [s.password],
    });
    await expect(keeper.start()).rejects.toMatchObject({ code: 'proxy_secret_exposed' });
    expect(await accepts('127.0.0.1', port)).toBe(false);
    expect(await readdir(dir)).not.toContain('keeper.pid');
  });

  it('handover: a detached proxy serves on; the next run finds it, adopts it, sees it die, stops it', async () => {
    const s = await spec('127.0.10.18');
    const name = `${s.imei}-socks`;
    const meta: ProxyRecordMeta = {
      imei: s.imei,
      fingerprint: 'f'.repeat(64),
      egress: s.egress,
      members: [name],
    };
    const p = new ProxyProcess({
      name,
      argv: ['microsocks', ...microsocksArgs(s)],
      runDir: dir,
      ports: [{ host: s.listen, port: s.socksPort }],
      record: meta,
    });
    await p.start();
    const pid = p.pid ?? 0;
    p.detach();
    expect(p.pid).toBeUndefined();
    // still serving, its pid file (with the record) left for the next run
    expect((await getViaSocks5(endpoint(s, s.socksPort), echoUrl)).body).toBe('127.0.10.18');
    const found = await findLeftProxies(dir, { checkLink: false });
    expect(found.killed).toBe(0);
    expect(found.modems).toHaveLength(1);
    const left = found.modems[0];
    expect(left).toMatchObject({ imei: s.imei, egress: s.egress, fingerprint: meta.fingerprint });
    expect(left?.processes.map((x) => [x.name, x.pid, x.ports])).toEqual([[name, pid, [s.socksPort]]]);

    const q = await ProxyProcess.adopt(
      {
        name,
        argv: ['microsocks'],
        runDir: dir,
        ports: [{ host: s.listen, port: s.socksPort }],
        record: meta,
        pollMs: 50,
      },
      left?.processes[0] ?? { pid: 0, start: 0 },
    );
    procs.push(q);
    expect({ pid: q.pid, adopted: q.isAdopted }).toEqual({ pid, adopted: true });
    expect((await getViaSocks5(endpoint(s, s.socksPort), echoUrl)).body).toBe('127.0.10.18');
    // not our child any more as far as `q` knows: its death is found in /proc
    const exited = q.exited();
    process.kill(pid, 'SIGKILL');
    await expect(exited).resolves.toMatchObject({ code: undefined });
    await q.stop();
    expect(await readdir(dir)).toEqual([]);
  });

  it('an adopted proxy is stopped like our own: SIGTERM to its group, pid file removed', async () => {
    const s = await spec('127.0.10.19');
    const name = `${s.imei}-socks`;
    const meta: ProxyRecordMeta = {
      imei: s.imei,
      fingerprint: 'e'.repeat(64),
      egress: s.egress,
      members: [name],
    };
    const base = {
      name,
      argv: ['microsocks', ...microsocksArgs(s)] as [string, ...string[]],
      runDir: dir,
      ports: [{ host: s.listen, port: s.socksPort }],
      record: meta,
    };
    const p = new ProxyProcess(base);
    await p.start();
    p.detach();
    const [left] = (await findLeftProxies(dir, { checkLink: false })).modems;
    const q = await ProxyProcess.adopt(base, left?.processes[0] ?? { pid: 0, start: 0 });
    procs.push(q);
    await q.stop();
    expect(await processAlive(left?.processes[0]?.pid ?? 0, left?.processes[0]?.start ?? 0)).toBe(false);
    expect(await accepts(s.listen, s.socksPort)).toBe(false);
    expect(await readdir(dir)).toEqual([]);
  });

  it('what cannot be adopted is killed at start: a recorded port it does not listen on, a pair with one gone', async () => {
    const wrongPort = await spec('127.0.10.20');
    const half = { ...(await spec('127.0.10.21')), imei: '866834040000025' };
    const start = async (
      s: ProxySpec,
      name: string,
      meta: ProxyRecordMeta,
      port: number,
    ): Promise<number> => {
      const p = new ProxyProcess({
        name,
        argv: ['microsocks', ...microsocksArgs(s)],
        runDir: dir,
        ports: [{ host: s.listen, port: s.socksPort }],
        record: meta,
      });
      await p.start();
      const pid = p.pid ?? 0;
      p.detach();
      // the record as a previous run would have written it, with the port it names
      const text = await readFile(join(dir, `${name}.pid`), 'utf8');
      await writeFile(
        join(dir, `${name}.pid`),
        text.replace(`"ports":[${s.socksPort}]`, `"ports":[${port}]`),
      );
      return pid;
    };
    const a = `${wrongPort.imei}-socks`;
    const pidA = await start(
      wrongPort,
      a,
      { imei: wrongPort.imei, fingerprint: 'a'.repeat(64), egress: wrongPort.egress, members: [a] },
      wrongPort.httpPort,
    );
    const b = `${half.imei}-socks`;
    const pidB = await start(
      half,
      b,
      {
        imei: half.imei,
        fingerprint: 'b'.repeat(64),
        egress: half.egress,
        members: [b, `${half.imei}-http`],
      },
      half.socksPort,
    );
    const found = await findLeftProxies(dir, { checkLink: false });
    expect(found).toEqual({ modems: [], killed: 2 });
    for (const pid of [pidA, pidB])
      await until(() => execa('kill', ['-0', String(pid)], { reject: false }).then((r) => r.exitCode !== 0), {
        timeoutMs: 3_000,
        message: `pid ${pid} killed`,
      });
    expect(await readdir(dir)).toEqual([]);
  });
});
