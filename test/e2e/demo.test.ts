import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { networkInterfaces, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { proxyRunDir } from '../../src/net/proxyRunDir.js';
import { getViaHttpProxy, getViaSocks5 } from '../../src/net/proxyClient.js';
import { freePort } from '../../src/util/ports.js';
import { until } from '../helpers/until.js';

/**
 * `modemfleet demo` as a user runs it: its own embedded PostgreSQL, simulated modems, real proxies
 * and an echo server; the printed curl commands work; one Ctrl-C stops everything it started.
 */

let dir: string | undefined;
/** The checkout bound into the 0700 directory (root only), and the cluster's home elsewhere. */
let checkout: string | undefined;
let clusterHome: string | undefined;
let proxyRun: string | undefined;
afterAll(async () => {
  if (checkout) await execa('umount', ['--lazy', checkout], { reject: false });
  if (dir) await rm(dir, { recursive: true, force: true });
  if (clusterHome) await rm(clusterHome, { recursive: true, force: true });
  if (proxyRun) await rm(proxyRun, { recursive: true, force: true });
});

const root = process.getuid?.() === 0;
const TOKEN = `demo-${randomBytes(12).toString('hex')}`;

/** What curl gets through a demo port for `url`: the HTTP status (000: nothing) and body. */
async function ask(
  kind: 'socks' | 'http',
  port: number,
  user: string,
  password: string,
  url: string,
): Promise<{ code: string; body: string }> {
  const proxy = `${kind === 'socks' ? 'socks5' : 'http'}://${user}:${password}@127.0.0.1:${port}`;
  const r = await execa(
    'curl',
    ['-sS', '--max-time', '4', '-o', '-', '-w', '\n%{http_code}', '-x', proxy, url],
    {
      reject: false,
    },
  );
  const out = r.stdout.trim().split('\n');
  return { code: out.at(-1) ?? '', body: out.slice(0, -1).join('\n').trim() };
}

/** /proc/PID/status and environ of a child of the demo: its own uid, no capability, no secret. */
async function unprivileged(pid: number, uid: RegExp): Promise<void> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  expect(status, `pid ${pid}`).toMatch(new RegExp(`^Uid:\\s+(${uid.source})\\s`, 'm'));
  expect(status).not.toMatch(/^Uid:\s+0\s/m);
  expect(status, `pid ${pid}`).toMatch(/^CapEff:\s+0{16}$/m);
  expect(status).toMatch(/^CapAmb:\s+0{16}$/m);
  expect(status).toMatch(/^CapPrm:\s+0{16}$/m);
  const environ = await readFile(`/proc/${pid}/environ`, 'utf8');
  expect(environ).not.toContain(TOKEN);
  expect(environ).not.toMatch(/MODEMFLEET_API_TOKEN|DATABASE_URL|postgres:\/\//);
}

describe('modemfleet demo', () => {
  it('serves every online modem from its own address; Ctrl-C leaves nothing behind', async () => {
    // as a root user clones: a 0700 directory (mktemp -d, like /root) holding the checkout and the
    // state; the embedded PostgreSQL's user can reach neither (its binaries and cluster move out)
    dir = await mkdtemp(join(tmpdir(), 'mf-demo-'));
    let cwd = process.cwd();
    if (root) {
      checkout = join(dir, 'modemfleet');
      await mkdir(checkout);
      await execa('mount', ['--bind', process.cwd(), checkout]);
      cwd = checkout;
    }
    const stateDir = join(dir, 'state');
    const env = {
      ...process.env,
      MODEMFLEET_PG_PORT: String(await freePort()),
      // a secret in the demo's environment, which no child may inherit
      MODEMFLEET_API_TOKEN: TOKEN,
    } as Record<string, string>;
    delete env['DATABASE_URL'];
    const child = execa(
      'node',
      ['bin/modemfleet.js', 'demo', '--modems', '4', '--http', '127.0.0.1:0', '--state-dir', stateDir],
      {
        cwd,
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
      imei: string;
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

    // the printed one-shot commands work as printed, in another process: status lists the demo's
    // modems, a rotate is carried out by the demo (a one-shot never starts a server of its own)
    const printed =
      /^commands \(another terminal\): MODEMFLEET_STATE_DIR=(\S+) npx modemfleet status \|/.exec(
        lines.find((l) => l.startsWith('commands ')) ?? '',
      );
    expect(printed?.[1]).toBe(stateDir);
    // where the cluster lives: in the state dir, or (as root, out of the postgres user's reach)
    // where data-location says
    const dataDir = root
      ? (await readFile(join(stateDir, 'postgres', 'data-location'), 'utf8')).trim()
      : join(stateDir, 'postgres', 'data');
    if (root) {
      expect(dataDir).toMatch(/^\/var\/lib\/modemfleet-pg\/[0-9a-f]{16}\/data$/);
      clusterHome = dirname(dataDir);
      expect((await stat(dir)).mode & 0o777).toBe(0o700); // nothing opened above the checkout
    }
    // run as root, they change no owner or mode in the farm's state dir
    const owners = async () =>
      Promise.all(
        [
          join(stateDir, 'postgres'),
          dataDir,
          join(stateDir, 'postgres', 'password'),
          join(stateDir, 'api-token'),
        ].map(async (p) => {
          const st = await stat(p).catch(() => null);
          return [p, st?.uid, st?.gid, st?.mode];
        }),
      );
    const ownersBefore = await owners();
    // the commands as printed, through a shell in the checkout, as a user types them
    const commandPrefix = /another terminal\): (MODEMFLEET_STATE_DIR=\S+ npx modemfleet) status \|/.exec(
      lines.find((l) => l.startsWith('commands ')) ?? '',
    )?.[1];
    const oneShotEnv: Record<string, string> = { ...env };
    delete oneShotEnv['MODEMFLEET_PG_PORT']; // found from the running server, as a user's shell would
    const oneShot = (args: string) =>
      execa('sh', ['-c', `${commandPrefix} ${args}`], {
        cwd,
        env: oneShotEnv,
        extendEnv: false,
        reject: false,
      });
    const status = await oneShot('status --json');
    expect(status.exitCode, status.stderr).toBe(0);
    expect((JSON.parse(status.stdout) as unknown[]).length).toBe(4);
    const rotated = await oneShot(`rotate ${online[0]?.imei ?? ''}`);
    expect(rotated.exitCode, rotated.stderr).toBe(0);
    const { id } = JSON.parse(rotated.stdout) as { id: number };
    const rotatedImei = online[0]?.imei;
    await until(
      async () =>
        (
          (await (
            await fetch(`${base}/api/commands/${id}`, { headers: { authorization: `Bearer ${token}` } })
          ).json()) as { status: string }
        ).status === 'done',
      30_000,
      'the printed rotate carried out by the demo',
    );
    expect(await owners()).toEqual(ownersBefore);
    // the rotated modem has a new address: what follows checks each port against the current one
    const now = (await (
      await fetch(`${base}/api/modems`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as { imei: string; wanIp: string }[];
    for (const a of online) a.wanIp = now.find((x) => x.imei === a.imei)?.wanIp ?? a.wanIp;
    expect(now.find((x) => x.imei === rotatedImei)?.wanIp).toBeTruthy();
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

    if (root) {
      // issue 18: each port reaches the simulated internet (127.0.0.2) and nothing else on the host
      expect(lines).toContain(
        'each port reaches the simulated internet (127.0.0.2) and nothing else on this host (proxies run as uid 61000+slot, no capabilities)',
      );
      expect(new URL(echoUrl).hostname).toBe('127.0.0.2');
      const hostAddress = Object.values(networkInterfaces())
        .flat()
        .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
      // a service of the host on every address (IPv4 and IPv6): it answers us directly
      const service = createServer((_, res) => res.end('host service'));
      await new Promise<void>((resolve) => service.listen(0, '::', resolve));
      const servicePort = (service.address() as { port: number }).port;
      try {
        const inspectorPort = Number(new URL(base ?? '').port);
        const targets = [
          `http://127.0.0.1:${inspectorPort}/health`, // the inspector
          `http://127.0.0.1:${servicePort}/`,
          `http://[::1]:${servicePort}/`,
          ...(hostAddress ? [`http://${hostAddress}:${servicePort}/`] : []),
        ];
        for (const t of targets)
          expect((await execa('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', t])).stdout, t).toBe(
            '200',
          );
        for (const a of online) {
          const other = online.find((o) => o !== a)!;
          for (const kind of ['socks', 'http'] as const) {
            const port = kind === 'socks' ? a.proxy.socksPort : a.proxy.httpPort;
            const via = (url: string) => ask(kind, port, a.proxy.username, a.proxy.password, url);
            expect(await via(echoUrl), `${kind} ${port} → internet`).toEqual({ code: '200', body: a.wanIp });
            for (const t of targets) expect((await via(t)).code, `${kind} ${port} → ${t}`).not.toBe('200');
            // another modem's HTTP port would answer 407 (its own credentials) if reached
            for (const t of [
              `http://127.0.0.1:${other.proxy.httpPort}/`,
              `http://${other.wanIp}:${other.proxy.httpPort}/`,
            ])
              expect((await via(t)).code, `${kind} ${port} → ${t}`).not.toBe('407');
          }
        }
      } finally {
        service.close();
      }
      // every proxy and the PostgreSQL server: own uid, no capabilities, no secret
      // in the 0700 directory the proxies could not read their configs: they are in /run
      const runDir = await proxyRunDir(join(stateDir, 'demo', 'run'), true, silentLogger);
      expect(runDir).toMatch(/^\/run\/modemfleet\/proxies-[0-9a-f]{16}$/);
      proxyRun = runDir;
      const pidFiles = (await readdir(runDir)).filter((f) => f.endsWith('.pid'));
      expect(pidFiles.length).toBeGreaterThanOrEqual(2 * 3);
      for (const f of pidFiles) {
        const pid = Number((await readFile(join(runDir, f), 'utf8')).split(' ')[0]);
        await unprivileged(pid, /610\d\d/);
      }
      const postmaster = Number((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
      const postgresUid = (await execa('id', ['-u', 'postgres'])).stdout.trim();
      await unprivileged(postmaster, new RegExp(postgresUid));
      // its binaries were out of its reach in the checkout: it runs a copy in the cache
      expect(await readlink(`/proc/${postmaster}/exe`)).toMatch(
        /^\/var\/cache\/modemfleet-pg\/[^/]+\/bin\/postgres$/,
      );
    }

    child.kill('SIGINT');
    const result = await child;
    expect({ code: result.exitCode, signal: result.signal }).toEqual({ code: 0, signal: undefined });
    // not on a terminal: no progress lines, only what it prints and its logs
    expect(String(result.stderr)).not.toMatch(/^modemfleet: (initialising|starting|\d+ of)/m);
    for (const path of [dir, dataDir]) {
      const left = await execa('pgrep', ['-f', path], { reject: false });
      expect(left.stdout, `processes left with ${path}`).toBe('');
    }
    // the demo's traffic table (this host's own namespace) went with it
    if (root)
      expect(
        (await execa('nft', ['list', 'table', 'inet', 'mf_traffic'], { reject: false })).exitCode,
      ).not.toBe(0);
  }, 180_000);

  it('on a terminal it says what it waits for: the database, then the modems coming up', async () => {
    const stateDir = await mkdtemp(join(tmpdir(), 'mf-demo-tty-'));
    await chmod(stateDir, 0o711);
    try {
      const env = { ...process.env, MODEMFLEET_PG_PORT: String(await freePort()) } as Record<string, string>;
      delete env['DATABASE_URL'];
      // a real terminal: util-linux's script runs the demo on a pseudo-terminal, through $SHELL -c;
      // `exec` makes the demo the only process there (dash, CI's /bin/sh, would stay as its parent
      // and die of the Ctrl-C itself: exit 130 whatever the demo does)
      const command = `exec node bin/modemfleet.js demo --modems 2 --http 127.0.0.1:0 --state-dir ${stateDir}`;
      const child = execa('script', ['-qfec', command, '/dev/null'], {
        env,
        extendEnv: false,
        reject: false,
      });
      // read on after 'ready' (a stream left unread would end the terminal with SIGPIPE)
      let seen = '';
      await new Promise<void>((resolve, reject) => {
        child.stdout?.on('data', (chunk: Buffer) => {
          seen += chunk.toString();
          if (/^ready\r?$/m.test(seen)) resolve();
        });
        void child.then(() => reject(new Error(`the demo ended before 'ready': ${seen.slice(-2000)}`)));
      });
      expect(seen).toMatch(/modemfleet: initialising the embedded PostgreSQL in \S+ \(the first start/);
      expect(seen).toMatch(/modemfleet: PostgreSQL ready; starting 2 simulated modems/);
      expect(seen).toMatch(/modemfleet: \d of 2 modems online/);
      child.stdin?.write('\x03'); // Ctrl-C on the terminal
      const result = await child;
      expect(result.exitCode).toBe(0);
    } finally {
      await rm(stateDir, { recursive: true, force: true });
    }
  }, 120_000);
});
