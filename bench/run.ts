// npm run bench [-- --quick]: prints a table and writes bench/results/latest.json.
import { mkdir, writeFile, mkdtemp, rm, chmod } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { EmbeddedCluster, freePort } from '../src/store/embeddedCluster.js';
import { openSql } from '../src/store/database.js';
import { migrate } from '../src/store/migrate.js';
import { journalThroughput } from './journalThroughput.js';

const quick = process.argv.includes('--quick');

async function main(): Promise<void> {
  let cluster: EmbeddedCluster | undefined;
  let dir: string | undefined;
  let url = process.env['DATABASE_URL'];
  if (!url) {
    dir = await mkdtemp(join(tmpdir(), 'mf-bench-'));
    await chmod(dir, 0o711);
    cluster = new EmbeddedCluster({ dir, port: await freePort() });
    await cluster.start();
    url = cluster.url;
  }
  const db = `mf_bench_${process.pid}`;
  const admin = openSql(url, { max: 1 });
  await admin.unsafe(`create database ${db}`);
  const u = new URL(url);
  u.pathname = `/${db}`;
  const sql = openSql(u.toString(), { max: 4 });
  try {
    await migrate(sql);
    const journal = await journalThroughput(sql, 1000, quick ? 5 : 20);
    const results = {
      at: new Date().toISOString(),
      machine: {
        cpus: cpus().length,
        model: cpus()[0]?.model,
        memGiB: Math.round(totalmem() / 2 ** 30),
        node: process.version,
      },
      quick,
      journal,
    };
    console.table({
      'journal (ours)': { 'rows/s': journal.oursPerSec, ratio: 1 },
      'raw multi-row INSERT (limit)': { 'rows/s': journal.rawPerSec, ratio: journal.vsRaw },
      'seed trigger pattern': { 'rows/s': journal.seedPerSec, ratio: journal.vsSeed },
    });
    console.log(
      `journal: ${journal.vsRaw}x of the raw limit (target >= 0.5), ${journal.vsSeed}x the seed pattern (target >= 3)`,
    );
    await mkdir('bench/results', { recursive: true });
    await writeFile('bench/results/latest.json', `${JSON.stringify(results, null, 2)}\n`);
  } finally {
    await sql.end();
    await admin.unsafe(`drop database if exists ${db} with (force)`);
    await admin.end();
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

await main();
