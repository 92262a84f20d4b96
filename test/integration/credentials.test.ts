import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { getViaHttpProxy, getViaSocks5, type ProxyEndpoint } from '../../src/net/proxyClient.js';
import { onlineCount, startFarm, until, type TestFarm } from '../helpers/farm.js';

/**
 * A rotated proxy password against the real thing: the supervisor with its data plane running real
 * microsocks and tinyproxy processes on loopback modem addresses (as the demo does), rotated through
 * the HTTP API. The old password is refused at once, the new one works, the modem stays online.
 */

let farm: TestFarm;
let echo: Server;
let echoUrl: string;
/** Holds every connection open and answers each chunk with "ok": a customer's long-lived tunnel. */
let hold: TcpServer;
let holdPort: number;

interface Row {
  imei: string;
  wanIp: string;
  seq: number;
  state: string;
  proxy: { httpPort: number; socksPort: number; username: string; password: string };
}

const rows = async (): Promise<Row[]> => (await (await farm.api('/api/modems')).json()) as Row[];

const via = (row: Row, password = row.proxy.password) => {
  const base: Omit<ProxyEndpoint, 'port'> = { host: '127.0.0.1', user: row.proxy.username, password };
  return {
    socks: () => getViaSocks5({ ...base, port: row.proxy.socksPort }, echoUrl),
    http: () => getViaHttpProxy({ ...base, port: row.proxy.httpPort }, echoUrl),
  };
};

const pidsOf = (imei: string): number[] =>
  [...farm.supervisor.modems.values()].find((m) => m.imei === imei)?.proxyPids ?? [];

/** A SOCKS5 tunnel to the hold server, authenticated with `password`; resolves once it carries data. */
function tunnel(row: Row, password: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: row.proxy.socksPort });
    const user = Buffer.from(row.proxy.username);
    const pass = Buffer.from(password);
    const steps = [
      Buffer.concat([Buffer.from([1, user.length]), user, Buffer.from([pass.length]), pass]),
      Buffer.from([5, 1, 0, 1, 127, 0, 0, 2, holdPort >> 8, holdPort & 255]),
      Buffer.from('ping'),
    ];
    let got = '';
    socket.on('error', reject);
    socket.on('data', (chunk: Buffer) => {
      got += chunk.toString('latin1');
      // method choice (2 bytes), auth status (2), connect reply (10), then the server's "ok"
      if (got.endsWith('ok')) return resolve(socket);
      const next =
        got.length === 2 ? steps[0] : got.length === 4 ? steps[1] : got.length === 14 ? steps[2] : undefined;
      if (next) socket.write(next);
    });
    socket.write(Buffer.from([5, 1, 2]));
  });
}

beforeAll(async () => {
  hold = createTcpServer((s) => {
    s.on('data', () => s.write('ok'));
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => hold.listen(0, '127.0.0.2', r));
  const held = hold.address();
  holdPort = typeof held === 'object' && held ? held.port : 0;
  echo = createServer((req, res) => res.end(req.socket.remoteAddress?.replace(/^::ffff:/, '') ?? '?'));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.2', r));
  const address = echo.address();
  echoUrl = `http://127.0.0.2:${typeof address === 'object' && address ? address.port : 0}/`;
  farm = await startFarm({
    modems: 2,
    dataPlane: (dir) => ({
      routing: false,
      backend: 'microsocks+tinyproxy',
      listen: '127.0.0.1',
      prefix: 32,
      runDir: join(dir, 'run'),
      dns: [],
      rulePriorityBase: 1_000,
    }),
  });
  await until(async () => (await onlineCount(farm)) === 2, 30_000, '2 online');
  await until(
    async () => {
      const all = await rows();
      if (!all.every((r) => r.proxy && pidsOf(r.imei).length === 2)) return false;
      for (const r of all)
        if (
          (
            await via(r)
              .socks()
              .catch(() => null)
          )?.body !== r.wanIp
        )
          return false;
      return true;
    },
    20_000,
    'every port serving',
  );
}, 60_000);

afterAll(async () => {
  const dir = farm?.dir;
  await farm?.stop();
  await new Promise((r) => echo?.close(r));
  hold?.close();
  if (dir) expect((await execa('pgrep', ['-f', dir], { reject: false })).stdout).toBe('');
});

describe('proxy credentials rotation with real proxies', () => {
  it('the old password is refused at once, the new one works; the modem stays online, the other untouched', async () => {
    const [target, other] = await rows();
    if (!target || !other) throw new Error('two modems expected');
    const otherPids = pidsOf(other.imei);
    expect((await via(target).socks()).body).toBe(target.wanIp);
    // a customer's connection opened with the old password, still open when it is rotated
    const open = await tunnel(target, target.proxy.password);
    const closed = new Promise<void>((r) => open.once('close', () => r()));
    const otherOpen = await tunnel(other, other.proxy.password);
    let otherClosed = false;
    otherOpen.once('close', () => (otherClosed = true));
    expect(await via(target).http()).toEqual({ status: 200, body: target.wanIp });

    const res = await farm.api(`/api/modems/${target.imei}/credentials`, { method: 'POST' });
    expect(res.status).toBe(200);
    const rotated = (await res.json()) as {
      username: string;
      password: string;
      command: { status: string; result: Record<string, unknown> };
    };
    expect(rotated.command).toMatchObject({ status: 'done', result: { applied: true } });
    expect(JSON.stringify(rotated.command.result)).not.toContain(rotated.password);
    expect(rotated.username).toBe(target.proxy.username);
    expect(rotated.password).not.toBe(target.proxy.password);

    // at once: no wait between the answer and these
    await expect(via(target).socks()).rejects.toMatchObject({ code: 'socks_auth_failed' });
    expect((await via(target).http()).status).toBe(401);
    expect((await via(target, rotated.password).socks()).body).toBe(target.wanIp);
    expect(await via(target, rotated.password).http()).toEqual({ status: 200, body: target.wanIp });

    // the old password's open connection ended with the old process; the other modem's lives on
    await closed;
    expect(otherClosed).toBe(false);
    otherOpen.write('again');
    await new Promise((r) => otherOpen.once('data', r));
    otherOpen.destroy();

    // the modem never left online (nothing journaled), its address and the other modem's proxies kept
    const after = await rows();
    expect(after.find((r) => r.imei === target.imei)).toMatchObject({
      state: 'online',
      seq: target.seq,
      wanIp: target.wanIp,
      proxy: { password: rotated.password },
    });
    expect(pidsOf(other.imei)).toEqual(otherPids);
    expect((await via(other).socks()).body).toBe(other.wanIp);

    // the new microsocks, like every ready one, shows no password in its arguments
    const pids = pidsOf(target.imei);
    expect(pids).toHaveLength(2);
    for (const pid of pids) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      expect(cmdline).not.toContain(rotated.password);
    }
  }, 30_000);
});
