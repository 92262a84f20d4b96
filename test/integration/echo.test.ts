import { connect } from 'node:net';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ECHO_LIMITS, EchoServer, clientAddress } from '../../src/echo.js';

/**
 * The echo endpoint (`modemfleet echo`): any GET of `/` or `/ip` is answered with the client's
 * address and nothing else; everything else is a 404; limits hold; the command listens where told,
 * stops on SIGTERM, and refuses a bad --listen with exit code 2.
 */

let echo: EchoServer;
let url: string;

beforeAll(async () => {
  echo = new EchoServer({ host: '127.0.0.1', port: 0 });
  url = echo.url(await echo.start());
});
afterAll(async () => {
  await echo?.stop();
});

describe('echo endpoint', () => {
  it("answers GET / and GET /ip with the client's address as plain text", async () => {
    for (const path of ['', 'ip', '?x=1']) {
      const r = await fetch(`${url}${path}`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe('text/plain');
      expect(await r.text()).toBe('127.0.0.1');
    }
    const head = await fetch(url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('answers anything else with 404 and reads no body', async () => {
    for (const [method, path] of [
      ['POST', ''],
      ['PUT', 'ip'],
      ['DELETE', ''],
      ['GET', 'favicon.ico'],
      ['GET', 'ip/x'],
    ] as const) {
      const r = await fetch(`${url}${path}`, {
        method,
        ...(method === 'POST' || method === 'PUT' ? { body: 'x'.repeat(100_000) } : {}),
      });
      expect({ method, path, status: r.status }).toEqual({ method, path, status: 404 });
      expect(await r.text()).toBe('not found');
    }
  });

  it('refuses headers larger than its limit', async () => {
    const r = await fetch(url, { headers: { 'x-big': 'a'.repeat(ECHO_LIMITS.maxHeaderSize + 100) } });
    expect(r.status).toBe(431);
  });

  it('closes a connection whose headers do not arrive in time (slowloris)', async () => {
    const { port } = new URL(url);
    const started = Date.now();
    const answer = await new Promise<string>((resolve) => {
      const socket = connect(Number(port), '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\nHost: x\r\n'));
      let got = '';
      socket.on('data', (d: Buffer) => (got += d.toString()));
      socket.on('close', () => resolve(got));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 408/);
    expect(Date.now() - started).toBeLessThan(ECHO_LIMITS.headersTimeoutMs + 3_000);
  }, 15_000);

  it('answers an IPv4 client of a dual-stack listener with the IPv4 address', async () => {
    const v6 = new EchoServer({ host: '::', port: 0 });
    let port: number;
    try {
      port = (await v6.start()).port;
    } catch {
      return; // no IPv6 on this host
    }
    try {
      expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('127.0.0.1');
      expect(await (await fetch(`http://[::1]:${port}/`)).text()).toBe('::1');
    } finally {
      await v6.stop();
    }
  });

  it('writes addresses as the internet does', () => {
    expect(clientAddress('::ffff:198.51.100.7')).toBe('198.51.100.7');
    expect(clientAddress('::FFFF:10.0.0.1')).toBe('10.0.0.1');
    expect(clientAddress('2001:db8::1')).toBe('2001:db8::1');
    expect(clientAddress('203.0.113.9')).toBe('203.0.113.9');
    expect(clientAddress(undefined)).toBe('');
  });
});

describe('modemfleet echo', () => {
  it('listens where told, answers, and stops on SIGTERM with exit code 0', async () => {
    const child = execa('node', ['bin/modemfleet.js', 'echo', '--listen', '127.0.0.1:0'], { reject: false });
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.split('\n')[0] ?? '');
      });
      child.once('exit', () => reject(new Error(`exited early: ${out}`)));
    });
    const m = /^listening on (http:\/\/127\.0\.0\.1:\d+\/)$/.exec(line);
    expect(m).not.toBeNull();
    const r = await fetch(m?.[1] ?? '');
    expect(await r.text()).toBe('127.0.0.1');
    child.kill('SIGTERM');
    expect((await child).exitCode).toBe(0);
  }, 30_000);

  it('a bad --listen: a clear error and exit code 2; a port it cannot have: exit code 1', async () => {
    for (const listen of ['bogus', '127.0.0.1:99999', 'off']) {
      const r = await execa('node', ['bin/modemfleet.js', 'echo', '--listen', listen], { reject: false });
      expect({ listen, code: r.exitCode }).toEqual({ listen, code: 2 });
      expect(r.stderr).toMatch(/--listen must be HOST:PORT/);
    }
    const busy = await execa('node', ['bin/modemfleet.js', 'echo', '--listen', new URL(url).host], {
      reject: false,
    });
    expect(busy.exitCode).toBe(1);
    expect(busy.stderr).toMatch(/cannot listen on 127\.0\.0\.1:\d+: EADDRINUSE/);
  }, 30_000);
});
