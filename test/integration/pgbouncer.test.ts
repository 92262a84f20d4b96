import { execa, type ResultPromise } from 'execa';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSql } from '../../src/store/database.js';
import { freePort } from '../../src/util/ports.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { until } from '../helpers/until.js';

/**
 * Issue 20 item 4: a farm through PgBouncer in transaction mode (Debian's `pgbouncer`, installed by
 * scripts/setup.sh). LISTEN through it never hears a NOTIFY: the daemon refuses to start with exit
 * code 4 and a message naming the connection; with DATABASE_LISTEN_URL a direct session, the pool
 * goes through the pooler and commands are woken by NOTIFY.
 */

const PGBOUNCER = '/usr/sbin/pgbouncer';
const NOBODY = 65534; // pgbouncer refuses to run as root

let db: TestDatabase;
let dir: string;
let bouncer: ResultPromise | undefined;
let bouncerUrl: string;
const children: ResultPromise[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-pgb-'));
  await chmod(dir, 0o711);
  const pg = new URL(db.url);
  const port = await freePort();
  const ini = join(dir, 'pgbouncer.ini');
  await writeFile(
    ini,
    [
      '[databases]',
      `* = host=127.0.0.1 port=${pg.port} user=${decodeURIComponent(pg.username)} password=${decodeURIComponent(pg.password)}`,
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      'unix_socket_dir =',
      'auth_type = any',
      'pool_mode = transaction',
      'default_pool_size = 10',
      'max_client_conn = 200',
      'ignore_startup_parameters = extra_float_digits,options',
      '',
    ].join('\n'),
    { mode: 0o644 },
  );
  await chmod(ini, 0o644);
  bouncer = execa(PGBOUNCER, [ini], {
    uid: NOBODY,
    gid: NOBODY,
    reject: false,
    stdout: 'ignore',
    stderr: 'pipe',
  });
  bouncerUrl = `postgres://modemfleet:unused@127.0.0.1:${port}${pg.pathname}`;
  const probe = openSql(bouncerUrl, { max: 1 });
  try {
    await until(
      async () => {
        try {
          return (await probe`select 1 as one`)[0]?.one === 1;
        } catch {
          return false;
        }
      },
      { timeoutMs: 10_000, message: 'pgbouncer answering' },
    );
  } finally {
    await probe.end({ timeout: 1 });
  }
}, 60_000);

afterAll(async () => {
  for (const c of children) {
    c.kill('SIGKILL');
    await c;
  }
  bouncer?.kill('SIGTERM');
  await bouncer;
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

async function daemon(env: Record<string, string>): Promise<{ child: ResultPromise; output: () => string }> {
  const sys = join(dir, 'sys');
  await mkdir(join(sys, 'bus', 'usb', 'devices'), { recursive: true });
  const config = join(dir, 'config.json');
  await writeFile(
    config,
    JSON.stringify({
      scan: { sysRoot: sys, devRoot: join(dir, 'dev') },
      hotplug: 'watch',
      spoolFsync: 'never',
      // commands are woken by NOTIFY alone here: the safety-net poll is far away
      policy: { commandPollMs: 600_000 },
    }),
  );
  const child = execa('node', ['bin/modemfleet.js', 'run', '--config', config], {
    reject: false,
    all: true,
    env: {
      MODEMFLEET_HOST_ID: 'host-pgb',
      MODEMFLEET_STATE_DIR: join(dir, 'state'),
      MODEMFLEET_HTTP: '127.0.0.1:0',
      MODEMFLEET_LOG_LEVEL: 'info',
      ...env,
    },
  });
  children.push(child);
  let out = '';
  child.all?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

describe.skipIf(!existsSync(PGBOUNCER))('through a transaction-mode PgBouncer', () => {
  it('LISTEN through the pooler is refused at start: exit code 4, the connection named', async () => {
    const { child } = await daemon({ DATABASE_URL: bouncerUrl });
    const result = await child;
    expect(result.exitCode).toBe(4);
    const text = String(result.all);
    expect(text).toMatch(
      /listen connection \(DATABASE_URL: 127\.0\.0\.1:\d+\/\S+\) did not receive a NOTIFY/,
    );
    expect(text).toMatch(/DATABASE_LISTEN_URL/);
    // nothing started: the host never registered
    expect(await db.sql`select 1 from hosts where id = 'host-pgb'`).toHaveLength(0);
  }, 60_000);

  it('with DATABASE_LISTEN_URL direct, the pool goes through the pooler and NOTIFY wakes commands', async () => {
    const { child, output } = await daemon({ DATABASE_URL: bouncerUrl, DATABASE_LISTEN_URL: db.url });
    await until(() => output().includes('modemfleet is running'), {
      timeoutMs: 30_000,
      message: () => `the daemon started: ${output().slice(-2000)}`,
    });
    // a modem of this host without a device: a command for it is claimed (woken by NOTIFY, the poll
    // is 10 minutes away) and answered `not_present` through the pooled connections
    await db.sql`insert into modems (imei, host_id) values ('356938035643809', 'host-pgb')`;
    const [row] = await db.sql<{ id: number }[]>`
      insert into modem_commands (imei, kind, requested_by) values ('356938035643809', 'reset', 'test') returning id`;
    const done = await until(
      async () => {
        const [c] = await db.sql<{ status: string; result: { error?: string } }[]>`
          select status, result from modem_commands where id = ${row?.id ?? 0}`;
        return c?.status === 'failed' && c;
      },
      { timeoutMs: 10_000, message: 'the command answered' },
    );
    expect(done.result.error).toBe('not_present');
    child.kill('SIGTERM');
    const stopped = await child;
    expect({ code: stopped.exitCode, signal: stopped.signal }, output().slice(-3000)).toEqual({
      code: 0,
      signal: undefined,
    });
  }, 90_000);
});
