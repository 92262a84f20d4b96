import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { getViaHttpProxy, getViaSocks5 } from '../../src/net/proxyClient.js';
import { freePort } from '../../src/util/ports.js';
import { until } from '../helpers/until.js';

/**
 * `modemfleet demo` as a user runs it: its own embedded PostgreSQL, simulated modems, real proxies
 * and an echo server; the printed curl commands work; one Ctrl-C stops everything it started.
 */

let dir: string | undefined;
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('modemfleet demo', () => {
  it('serves every online modem from its own address; Ctrl-C leaves nothing behind', async () => {
    dir = await mkdtemp(join(tmpdir(), 'mf-demo-'));
    await chmod(dir, 0o711); // the embedded PostgreSQL runs as its own user below it
    const env = { ...process.env, MODEMFLEET_PG_PORT: String(await freePort()) } as Record<string, string>;
    delete env['DATABASE_URL'];
    const child = execa(
      'node',
      ['bin/modemfleet.js', 'demo', '--modems', '4', '--http', '127.0.0.1:0', '--state-dir', dir],
      {
        reject: false,
        env,
        extendEnv: false,
      },
    );
    const lines: string[] = [];
    for await (const line of createInterface({ input: child.stdout })) {
      lines.push(line);
      if (line === 'ready') break;
    }
    if (lines.length === 0)
      throw new Error(`the demo printed nothing: ${String((await child).stderr).slice(-2000)}`);
    expect(lines[0]).toMatch(/^modemfleet demo: 4 simulated EC25 modems, 3 online/);
    const modems = lines
      .map((l) => /^\s+(\d{15})\s+online\s+(127\.0\.\d+\.\d+)\s+http (\d+)\s+socks (\d+)/.exec(l))
      .filter((m): m is RegExpExecArray => m !== null);
    expect(modems).toHaveLength(3);
    expect(lines.some((l) => /error\s+-.*\(sim_missing\)/.test(l))).toBe(true);
    const curl = lines.find((l) => l.includes('curl -x socks5://'));
    const m = /socks5:\/\/([a-z0-9]+):([A-Za-z0-9_-]+)@127\.0\.0\.1:(\d+) (http:\/\/\S+)/.exec(curl ?? '');
    expect(m).not.toBeNull();
    const [, user = '', password = '', socksPort = '', echoUrl = ''] = m ?? [];
    const first = modems.find((x) => x[4] === socksPort);
    const proxy = { host: '127.0.0.1', user, password };
    expect((await getViaSocks5({ ...proxy, port: Number(socksPort) }, echoUrl)).body.trim()).toBe(first?.[2]);
    expect((await getViaHttpProxy({ ...proxy, port: Number(first?.[3]) }, echoUrl)).body.trim()).toBe(
      first?.[2],
    );

    // the inspector: the API lists the 4 modems with distinct ports; two ports, two addresses
    const token = /^API token: (\S+)$/.exec(lines.find((l) => l.startsWith('API token: ')) ?? '')?.[1];
    const base = /^inspector: (http:\/\/127\.0\.0\.1:\d+)\/#token=/.exec(
      lines.find((l) => l.startsWith('inspector: ')) ?? '',
    )?.[1];
    expect(token && base).toBeTruthy();
    const api = (await (
      await fetch(`${base}/api/modems`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as {
      state: string;
      wanIp: string;
      proxy: { socksPort: number; httpPort: number; username: string; password: string };
    }[];
    expect(api).toHaveLength(4);
    expect(new Set(api.flatMap((a) => [a.proxy.socksPort, a.proxy.httpPort])).size).toBe(8);
    const online = api.filter((a) => a.state === 'online');
    expect(online.length).toBeGreaterThanOrEqual(3);
    const seen = await Promise.all(
      online.slice(0, 2).map(async (a) =>
        (
          await getViaSocks5(
            {
              host: '127.0.0.1',
              port: a.proxy.socksPort,
              user: a.proxy.username,
              password: a.proxy.password,
            },
            echoUrl,
          )
        ).body.trim(),
      ),
    );
    expect(seen).toEqual(online.slice(0, 2).map((a) => a.wanIp));
    expect(new Set(seen).size).toBe(2);
    // the demo's loopback carrier has no NAT: the public address is the modem's own, once learned
    await until(
      async () => {
        const now = (await (
          await fetch(`${base}/api/modems`, { headers: { authorization: `Bearer ${token}` } })
        ).json()) as { imei: string; wanIp: string | null; publicIp: string | null }[];
        return now.filter((a) => a.publicIp !== null && a.publicIp === a.wanIp).length >= 3;
      },
      20_000,
      'publicIp learned (equal to wanIp) on the online modems',
    );

    child.kill('SIGINT');
    const result = await child;
    expect({ code: result.exitCode, signal: result.signal }).toEqual({ code: 0, signal: undefined });
    const left = await execa('pgrep', ['-f', dir], { reject: false });
    expect(left.stdout).toBe('');
  }, 120_000);
});
