import { connect, createServer } from 'node:net';
import { chmod, mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Database, defaultSslMode, openSql } from '../../src/store/database.js';
import { createTestDatabase } from '../helpers/db.js';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';
import { loadConfig } from '../../src/config.js';
import { System } from '../../src/system.js';
import { freePort } from '../../src/util/ports.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-db-'));
  await chmod(dir, 0o711); // the postgres user must reach the clusters below
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('DATABASE_URL', () => {
  it('a malformed URL is a clear error that does not echo the password', async () => {
    for (const url of [
      'not a url',
      'mysql://u:s3cret@localhost/db',
      'postgres://u:s3cret@localhost:port/db',
    ]) {
      const db = new Database({ url });
      const err = (await db.start().catch((e: unknown) => e)) as Error & { code: string };
      expect(err.code).toBe('database_url_invalid');
      expect(err.message).toMatch(/^DATABASE_URL /);
      expect(err.message).not.toContain('s3cret');
    }
  });

  it('an unreachable server: bounded retry with backoff, then one line naming where', async () => {
    const port = await freePort();
    const db = new Database({
      url: `postgres://u:s3cret@127.0.0.1:${port}/db`,
      connectAttempts: 3,
      connectBackoffMs: 50,
    });
    const started = Date.now();
    const err = (await db.start().catch((e: unknown) => e)) as Error & { code: string };
    expect(err.code).toBe('database_unreachable');
    expect(err.message).toBe(
      `cannot reach PostgreSQL at 127.0.0.1:${port}/db after 3 attempts (ECONNREFUSED)`,
    );
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('one-shot commands and the embedded server', () => {
  it('without a running farm: no_farm_running at once, and the state dir is not created', async () => {
    const stateDir = join(dir, 'never-started');
    const config = loadConfig({ env: { MODEMFLEET_STATE_DIR: stateDir } });
    const system = new System(config, {
      application: 'test',
      max: 1,
      embedded: 'running',
      migrations: 'check',
    });
    await expect(system.start()).rejects.toMatchObject({ code: 'no_farm_running' });
    await expect(stat(stateDir)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('TLS to a database on another host', () => {
  it('TLS unless sslmode says otherwise or the host is loopback', () => {
    expect(defaultSslMode('postgres://u:p@db.lan:5432/mf')).toBe('require');
    expect(defaultSslMode('postgres://u:p@10.0.0.5/mf')).toBe('require');
    expect(defaultSslMode('postgres://u:p@[fd00::5]/mf')).toBe('require');
    expect(defaultSslMode('postgres://u:p@db.lan/mf?sslmode=disable')).toBeUndefined();
    expect(defaultSslMode('postgres://u:p@db.lan/mf?sslmode=verify-full')).toBeUndefined();
    expect(defaultSslMode('postgres://u:p@127.0.0.1:5432/mf')).toBeUndefined();
    expect(defaultSslMode('postgres://u:p@localhost/mf')).toBeUndefined();
    expect(defaultSslMode('postgres://u:p@[::1]/mf')).toBeUndefined();
    expect(defaultSslMode('postgres://u:p@x/mf?host=/run/postgresql')).toBeUndefined();
  });

  it('a server without TLS at a non-loopback address: a clear error naming sslmode=disable, which connects', async () => {
    const db = await createTestDatabase();
    // a non-loopback address of this host (TEST-NET-1, on lo for the test: no dummy module here)
    const address = '192.0.2.54';
    const server = createServer((socket) => {
      const upstream = connect(Number(new URL(db.url).port), '127.0.0.1');
      socket.pipe(upstream).pipe(socket);
      upstream.on('error', () => socket.destroy());
      socket.on('error', () => upstream.destroy());
    });
    try {
      await execa('ip', ['addr', 'add', `${address}/32`, 'dev', 'lo']);
      await new Promise<void>((resolve) => server.listen(0, address, resolve));
      const url = new URL(db.url);
      url.hostname = address;
      url.port = String((server.address() as { port: number }).port);
      const refused = new Database({ url: url.href, connectAttempts: 1 });
      const err = (await refused.start().catch((e: unknown) => e)) as Error & { code: string };
      expect(err.code).toBe('database_tls_unavailable');
      expect(err.message).toMatch(/does not offer TLS.*sslmode=disable/);
      expect(err.message).not.toContain(url.password);
      url.searchParams.set('sslmode', 'disable');
      const clear = new Database({ url: url.href, connectAttempts: 1 });
      await clear.start();
      expect(await clear.sql`select 1 as one`).toEqual([{ one: 1 }]);
      await clear.stop();
    } finally {
      server.close();
      await execa('ip', ['addr', 'del', `${address}/32`, 'dev', 'lo'], { reject: false });
      await db.drop();
    }
  });
});

describe('embedded PostgreSQL', () => {
  it('a taken port gives a clear error after a bounded retry, not undefined', async () => {
    const blocker = createServer();
    const port = await freePort();
    await new Promise<void>((r) => blocker.listen(port, '127.0.0.1', r));
    try {
      const cluster = new EmbeddedCluster({ dir: join(dir, 'taken'), port, startAttempts: 2 });
      const err = (await cluster.start().catch((e: unknown) => e)) as Error & { code: string };
      expect(err).toBeInstanceOf(Error);
      expect(err.code).toBe('pg_port_taken');
      expect(err.message).toContain(`port ${port}`);
      expect(cluster.running).toBe(false);
    } finally {
      blocker.close();
    }
  });

  it('refuses a non-empty data dir that is not a cluster, and deletes nothing', async () => {
    const foreign = join(dir, 'foreign');
    await mkdir(join(foreign, 'data'), { recursive: true });
    await writeFile(join(foreign, 'data', 'precious.txt'), 'keep me');
    const cluster = new EmbeddedCluster({ dir: foreign, port: await freePort() });
    await expect(cluster.start()).rejects.toMatchObject({ code: 'pg_datadir_foreign' });
    expect(await readFile(join(foreign, 'data', 'precious.txt'), 'utf8')).toBe('keep me');
  });

  it('stops a server orphaned by a SIGKILLed parent, then re-uses the data dir with its data', async () => {
    const clusterDir = join(dir, 'orphan');
    const port = await freePort();
    const child = execa(
      'node',
      ['--import', 'tsx', 'test/helpers/startCluster.ts', clusterDir, String(port)],
      {
        reject: false,
        buffer: false,
        stdout: 'pipe',
      },
    );
    const line = await new Promise<string>((resolve, reject) => {
      child.stdout?.once('data', (d: Buffer) => resolve(d.toString()));
      void child.then((r) => reject(new Error(`child exited early (${r.exitCode})`)));
    });
    const { pid: orphanPid } = JSON.parse(line) as { pid: number };
    const first = new EmbeddedCluster({ dir: clusterDir, port });
    // write something through the orphan before its parent dies
    const url = `postgres://modemfleet:${encodeURIComponent((await readFile(join(clusterDir, 'password'), 'utf8')).trim())}@127.0.0.1:${port}/modemfleet`;
    const sql = openSql(url, { max: 1 });
    await sql`create table kept (v text)`;
    await sql`insert into kept values ('survives')`;
    await sql.end();

    // while its owner lives, the cluster is not ours: refused, or shared when attaching
    await expect(new EmbeddedCluster({ dir: clusterDir, port }).start()).rejects.toMatchObject({
      code: 'pg_in_use',
    });
    const attached = new EmbeddedCluster({ dir: clusterDir, port: 1, attach: true });
    await attached.start();
    expect(attached.attached).toBe(true);
    expect(attached.port).toBe(port);
    const viaAttach = openSql(attached.url, { max: 1 });
    expect(await viaAttach`select v from kept`).toEqual([{ v: 'survives' }]);
    await viaAttach.end();
    await attached.stop();
    expect(alive(orphanPid)).toBe(true); // stop() of an attached cluster leaves it running
    // a one-shot command's way (attach: 'only') uses it too
    const oneShot = new EmbeddedCluster({ dir: clusterDir, port: 1, attach: 'only' });
    await oneShot.start();
    expect(oneShot).toMatchObject({ attached: true, port });
    await oneShot.stop();

    child.kill('SIGKILL');
    await child;
    expect(alive(orphanPid)).toBe(true); // the orphan still holds port and lock

    // no running modemfleet owns it now: a one-shot says so at once, and touches nothing (it
    // neither stops the orphan nor changes an owner or mode in the state dir)
    const owners = async () =>
      Promise.all(
        [clusterDir, join(clusterDir, 'data'), join(clusterDir, 'password')].map(async (p) => {
          const s = await stat(p);
          return [p, s.uid, s.gid, s.mode];
        }),
      );
    const before = await owners();
    const started = Date.now();
    await expect(
      new EmbeddedCluster({ dir: clusterDir, port, attach: 'only' }).start(),
    ).rejects.toMatchObject({
      code: 'no_farm_running',
      message: expect.stringMatching(/^no running modemfleet uses .*: start it/) as unknown,
    });
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(alive(orphanPid)).toBe(true);
    expect(await owners()).toEqual(before);

    await first.start();
    try {
      expect(alive(orphanPid)).toBe(false);
      const again = openSql(first.url, { max: 1 });
      expect(await again`select v from kept`).toEqual([{ v: 'survives' }]);
      await again.end();
    } finally {
      await first.stop();
    }
  });
});
