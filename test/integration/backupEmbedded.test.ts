import { chmod, mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';
import { openSql } from '../../src/store/database.js';
import { migrate } from '../../src/store/migrate.js';
import { freePort } from '../../src/util/ports.js';

// backup and restore with the embedded server: the running farm's for a backup; with the farm
// stopped, its own cluster started for the one command, and the service's files left as they were.
const IMEI = '356000000000201';
const LATER = '356000000000202';
let dir: string;
let state: string;
let port: number;
let farm: ResultPromise | undefined;
let postmaster = 0;

const cli = (args: string[], stateDir = state) =>
  execa('node', ['bin/modemfleet.js', ...args], {
    reject: false,
    env: { DATABASE_URL: '', MODEMFLEET_STATE_DIR: stateDir, MODEMFLEET_HOST_ID: 'emb-host' },
  });

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** A farm: a process that owns the embedded server of the state dir (as `modemfleet run` does). */
async function startFarm(): Promise<void> {
  const child = execa(
    'node',
    ['--import', 'tsx', 'test/helpers/startCluster.ts', join(state, 'postgres'), String(port)],
    { reject: false, buffer: false, stdout: 'pipe' },
  );
  farm = child;
  const line = await new Promise<string>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(d.toString()));
    void child.then((r) => reject(new Error(`farm exited early (${r.exitCode})`)));
  });
  postmaster = (JSON.parse(line) as { pid: number }).pid;
}

/** The farm stops, and its server with it. */
async function stopFarm(): Promise<void> {
  farm?.kill('SIGKILL');
  await farm;
  farm = undefined;
  process.kill(postmaster, 'SIGINT');
  for (let i = 0; i < 200 && alive(postmaster); i++) await new Promise((r) => setTimeout(r, 50));
  expect(alive(postmaster)).toBe(false);
}

const url = async (): Promise<string> => {
  const password = (await readFile(join(state, 'postgres', 'password'), 'utf8')).trim();
  return `postgres://modemfleet:${encodeURIComponent(password)}@127.0.0.1:${port}/modemfleet`;
};

/** Owner, group and mode of the service's files in the state dir, and the owner file's content. */
async function serviceFiles(): Promise<unknown[]> {
  const pg = join(state, 'postgres');
  const paths = [
    state,
    pg,
    join(pg, 'data'),
    join(pg, 'password'),
    join(pg, 'owner'),
    join(pg, 'data', 'PG_VERSION'),
  ];
  const out: unknown[] = await Promise.all(
    paths.map(async (p) => {
      const s = await stat(p);
      return [p, s.uid, s.gid, s.mode];
    }),
  );
  out.push(await readFile(join(pg, 'owner'), 'utf8'), (await readdir(pg)).sort());
  return out;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-backup-emb-'));
  await chmod(dir, 0o711); // the postgres user must reach the cluster below
  state = join(dir, 'state');
  port = await freePort();
  await startFarm();
  const sql = openSql(await url(), { max: 1 });
  try {
    await migrate(sql);
    await sql`insert into hosts (id, name, stopped_at) values ('emb-host', 'emb-host', now())`;
    await sql`insert into modems (imei, host_id) values (${IMEI}, 'emb-host')`;
    await sql`insert into modem_commands (imei, kind) values (${IMEI}, 'rotate')`;
  } finally {
    await sql.end();
  }
});
afterAll(async () => {
  if (farm) await stopFarm().catch(() => undefined);
  await rm(dir, { recursive: true, force: true });
});

describe('backup and restore with the embedded server', () => {
  it("backs up a running farm's database; restores with the farm stopped, leaving the service's files alone", async () => {
    const file = join(dir, 'farm.gz');
    const b = await cli(['backup', file]);
    expect({ code: b.exitCode, err: b.stderr }).toEqual({ code: 0, err: '' });
    expect(JSON.parse(b.stdout)).toMatchObject({ rows: { modems: 1, modem_commands: 1 } });

    // the farm goes on: a modem and a command after the backup
    const sql = openSql(await url(), { max: 1 });
    await sql`insert into modems (imei, host_id) values (${LATER}, 'emb-host')`;
    await sql`insert into modem_commands (imei, kind) values (${LATER}, 'reset')`;
    await sql.end();

    const refused = await cli(['restore', file]);
    expect(refused.exitCode).toBe(4);
    expect(refused.stderr).toMatch(/^modemfleet restore: a modemfleet \(pid \d+\) runs on .*: stop it first/);

    await stopFarm();
    const before = await serviceFiles();
    const r = await cli(['restore', file]);
    expect({ code: r.exitCode, err: r.stderr }).toEqual({ code: 0, err: '' });
    expect(JSON.parse(r.stdout)).toMatchObject({ rows: { modems: 1, modem_commands: 1 }, migrated: [] });
    // a backup with the farm stopped works the same way
    const again = await cli(['backup', join(dir, 'stopped.gz')]);
    expect(again.exitCode).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ rows: { modems: 1, modem_commands: 1 } });
    // nothing of the service's changed, and no server is left running
    expect(await serviceFiles()).toEqual(before);
    await expect(stat(join(state, 'postgres', 'data', 'postmaster.pid'))).rejects.toMatchObject({
      code: 'ENOENT',
    });

    // the farm starts again on the restored database: the later modem and command are gone, and
    // the next command's id follows the backup's
    const cluster = new EmbeddedCluster({ dir: join(state, 'postgres'), port });
    await cluster.start();
    try {
      const after = openSql(cluster.url, { max: 1 });
      expect(await after`select imei from modems order by imei`).toEqual([{ imei: IMEI }]);
      const [next] = await after<{ id: number }[]>`
        insert into modem_commands (imei, kind) values (${IMEI}, 'reset') returning id`;
      expect(next?.id).toBe(2);
      await after.end();
    } finally {
      await cluster.stop();
    }
  }, 240_000);

  it('no cluster in the state dir: one line, exit 4, and the state dir is not created', async () => {
    const nowhere = join(dir, 'no-state');
    const r = await cli(['restore', join(dir, 'farm.gz')], nowhere);
    expect(r.exitCode).toBe(4);
    expect(r.stderr).toMatch(
      /^modemfleet restore: no embedded PostgreSQL cluster in .*no-state\/postgres\/data: start the farm once/,
    );
    await expect(stat(nowhere)).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
