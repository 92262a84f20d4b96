// npm run bench [-- --quick]: prints a table and writes bench/results/latest.json.
// Every figure is printed next to the limit or baseline it is measured against, in the same run.
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { openSql, type Sql } from '../src/store/database.js';
import { EmbeddedCluster } from '../src/process/embeddedCluster.js';
import { freePort } from '../src/util/ports.js';
import { migrate } from '../src/store/migrate.js';
import { farmBenchmark, farmRun } from './farm.js';
import { fleetBoot, idleCost, journalRows } from './fleet.js';
import { journalMigration, journalRetention } from './journalRetention.js';
import { journalThroughput } from './journalThroughput.js';
import { notifyLatency } from './latency.js';
import { rotationLatency } from './rotation.js';
import { throughputBenchmark, throughputRows, throughputSettings } from './throughput.js';

const quick = process.argv.includes('--quick');
const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
// retention and migration load millions of rows, farm runs a farm of farms: only when asked for
// (--only=retention,migration,farm)
const wanted = (name: string): boolean =>
  only ? only.split(',').includes(name) : !['retention', 'migration', 'farm'].includes(name);
const numberArg = (flag: string): number | undefined => {
  const v = process.argv.find((a) => a.startsWith(`--${flag}=`))?.slice(flag.length + 3);
  return v === undefined ? undefined : Number(v);
};

/** The benchmarks that need PostgreSQL (the others do not start it). */
const DATABASE_BENCHMARKS = [
  'journal',
  'latency',
  'boot',
  'rotation',
  'idle',
  'rows',
  'retention',
  'migration',
  'farm',
];

async function main(): Promise<void> {
  let cluster: EmbeddedCluster | undefined;
  let dir: string | undefined;
  let adminUrl = process.env['DATABASE_URL'] ?? '';
  if (!adminUrl && DATABASE_BENCHMARKS.some(wanted)) {
    dir = await mkdtemp(join(tmpdir(), 'mf-bench-'));
    await chmod(dir, 0o711);
    cluster = new EmbeddedCluster({ dir, port: await freePort() });
    await cluster.start();
    adminUrl = cluster.url;
  }
  const admin = adminUrl ? openSql(adminUrl, { max: 1 }) : undefined;
  let n = 0;
  /** A fresh migrated database for one benchmark, dropped afterwards. */
  const withDatabase = async <T>(fn: (sql: Sql, url: string) => Promise<T>): Promise<T> => {
    if (!admin) throw new Error('no database (DATABASE_URL unset and none started)');
    const name = `mf_bench_${process.pid}_${n++}`;
    await admin.unsafe(`create database ${name}`);
    const u = new URL(adminUrl);
    u.pathname = `/${name}`;
    const sql = openSql(u.toString(), { max: 8 });
    try {
      await migrate(sql);
      return await fn(sql, u.toString());
    } finally {
      await sql.end();
      await admin.unsafe(`drop database if exists ${name} with (force)`);
    }
  };
  const results: Record<string, unknown> = {
    at: new Date().toISOString(),
    machine: {
      cpus: cpus().length,
      model: cpus()[0]?.model,
      memGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
    },
    quick,
  };
  const table: Record<string, { figure: string; 'measured against': string; ratio: string; target: string }> =
    {};
  try {
    if (wanted('journal')) {
      const j = await withDatabase((sql, url) => journalThroughput(sql, url, 1000, quick ? 5 : 20));
      results['journal'] = j;
      table['journal, 1,000 modems'] = {
        figure: `${j.oursPerSec} rows/s`,
        'measured against': `raw INSERT ${j.rawPerSec}/s; seed trigger ${j.seedPerSec}/s`,
        ratio: `${j.vsRaw}x raw, ${j.vsSeed}x seed`,
        target: `>= 0.5x raw (${j.vsRaw >= 0.5 ? 'met' : 'MISSED'}), >= 3x seed (${j.vsSeed >= 3 ? 'met' : 'MISSED'})`,
      };
    }
    if (wanted('latency')) {
      const l = await withDatabase((sql, url) => notifyLatency(sql, url, quick ? 3 : 10));
      results['latency'] = l;
      table['NOTIFY → WebSocket'] = {
        figure: `from INSERT sent: p50 ${l.wsP50Ms} ms, p99 ${l.wsP99Ms} ms; after commit: p50 ${l.wsAfterCommitP50Ms} ms, p99 ${l.wsAfterCommitP99Ms} ms (${l.events} events, ${l.rate}/s, ${l.lost} lost)`,
        'measured against': `raw listen from INSERT sent: p50 ${l.rawP50Ms} ms, p99 ${l.rawP99Ms} ms; after commit p99 ${l.rawAfterCommitP99Ms} ms`,
        ratio: `p99 ${l.p99Ratio}x raw`,
        target: `p99 <= 2x raw (${l.p99Ratio <= 2 ? 'met' : 'MISSED'}), < 5 ms after commit (${l.wsAfterCommitP99Ms < 5 ? 'met' : 'MISSED'})`,
      };
    }
    if (wanted('boot')) {
      const sizes = quick ? [100, 500] : [100, 500, 1000];
      const boots = [];
      for (const size of sizes) {
        const b = await withDatabase((sql, url) => fleetBoot(sql, url, size));
        boots.push(b);
        table[`fleet boot, ${size} modems`] = {
          figure: `${b.wallMs} ms; ${b.cpuMsPerModem} ms CPU, ${b.heapKiBPerModem} KiB heap, ${b.rssKiBPerModem} KiB RSS per modem`,
          'measured against': '10 s for 1,000; 200 KiB RSS per modem',
          ratio: `${(b.rssKiBPerModem / 200).toFixed(2)}x RSS limit${size === 1000 ? `, ${(b.wallMs / 10_000).toFixed(2)}x time limit` : ''}`,
          target: b.targetMet ? 'met' : 'MISSED',
        };
      }
      results['boot'] = boots;
    }
    if (wanted('rotation')) {
      const r = await withDatabase((sql, url) => rotationLatency(sql, url, quick ? 5 : 20));
      results['rotation'] = r;
      table['rotation, insert → verified'] = {
        figure: `p50 ${r.p50Ms} ms, max ${r.maxMs} ms (${r.rotations} rotations, detach ${r.detachMs} ms subtracted)`,
        'measured against': '1 s',
        ratio: `${(r.p50Ms / 1000).toFixed(2)}x`,
        target: r.maxMs < 1000 ? 'met' : 'MISSED',
      };
    }
    if (wanted('idle')) {
      const i = await withDatabase((sql, url) => idleCost(sql, url, 100, quick ? 10 : 60));
      results['idle'] = i;
      const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
      table['idle, 100 online modems'] = {
        figure: `supervisor ${pct(i.supervisorShareOfCore)} of a core over ${i.seconds} s (process ${pct(i.totalShareOfCore)}, of which simulator ${pct(i.simulatorShareOfCore)})`,
        'measured against': `1% of a core; the process's floor before the farm: ${pct(i.floorShareOfCore)}`,
        ratio: `${(i.supervisorShareOfCore / 0.01).toFixed(2)}x limit`,
        target: i.targetMet ? 'met' : 'MISSED',
      };
    }
    if (wanted('rows')) {
      const r = await withDatabase((sql, url) => journalRows(sql, url, 40, quick ? 5 : 20));
      results['journalRows'] = r;
      table['journal rows per modem-hour'] = {
        figure: `idle online ${r.idleRowsPerModemHourAfter}, searching ${r.searchingRowsPerModemHourAfter}`,
        'measured against': `every state change (before the rule): idle ${r.idleRowsPerModemHourBefore}, searching ${r.searchingRowsPerModemHourBefore}`,
        ratio: `idle ${r.idleRowsPerModemHourAfter}/${r.idleRowsPerModemHourBefore}`,
        target: `0 for an idle modem (${r.targetMet ? 'met' : 'MISSED'})`,
      };
    }
    if (wanted('retention')) {
      const r = await journalRetention(adminUrl, numberArg('rows-per-day'));
      results['retention'] = r;
      for (const c of r.cases) {
        table[`prune a day (${r.rowsPerDay} rows, ${r.modems} modems): ${c.name}`] = {
          figure: `${c.pruneMs} ms (longest statement ${c.longestStatementMs} ms); appends during: p50 ${c.appendsDuring.p50Ms} ms, p99 ${c.appendsDuring.p99Ms} ms, max ${c.appendsDuring.maxMs} ms`,
          'measured against': `appends before: p50 ${c.appendsBefore.p50Ms} ms, p99 ${c.appendsBefore.p99Ms} ms, max ${c.appendsBefore.maxMs} ms`,
          ratio: `max ${(c.appendsDuring.maxMs / Math.max(c.appendsBefore.maxMs, 1)).toFixed(2)}x; waiting for a lock: ${c.maxWaitingForLock}`,
          target: c.appendsDuring.maxMs < 1_000 && c.maxWaitingForLock === 0 ? 'no stall' : 'STALL',
        };
      }
    }
    if (wanted('migration')) {
      const m = await journalMigration(adminUrl, numberArg('migration-rows'));
      results['migration'] = m;
      table[`migrations 0004+0005 on ${m.rows} rows (${m.tableMiB} MiB)`] = {
        figure: `${m.migrationMs} ms; appends during: max ${m.appendsDuring.maxMs} ms`,
        'measured against': `appends before: p99 ${m.appendsBefore.p99Ms} ms, max ${m.appendsBefore.maxMs} ms`,
        ratio: m.locks.join('; '),
        target: m.migrationMs < 5_000 ? 'met' : 'MISSED',
      };
      for (const a of m.alternatives)
        table[`alternative: ${a.name}`] = {
          figure: `${a.ms} ms`,
          'measured against': '-',
          ratio: a.locks,
          target: '-',
        };
    }
    if (wanted('farm') && process.argv.includes('--farm-synthetic')) {
      // the inspector's side of 10,000 modems without simulating them (the cores could not)
      const hosts = numberArg('farm-hosts') ?? 10;
      const perHost = numberArg('farm-modems') ?? 1000;
      const clients = numberArg('farm-clients') ?? 100;
      const x = await withDatabase((sql, url) =>
        farmRun(sql, url, {
          hosts,
          modemsPerHost: perHost,
          clients,
          windowSeconds: quick ? 20 : 60,
          poolMax: 4,
          rotationsPerMinute: 0.01,
          page: true,
          synthetic: true,
        }),
      );
      results['farmSynthetic'] = x;
      table[`farm inspector, ${x.modems} journaled modems (${x.clients} ws clients)`] = {
        figure: `NOTIFY → ws p99 ${x.wsP99Ms} ms (${x.wsSamples}, ${x.wsLost} lost); snapshot ${x.snapshotMs} ms, ${Math.round(x.snapshotBytes / 1024)} KiB (${x.clients} at once: ${x.snapshotBurstMaxMs} ms); /api/modems ${x.apiModemsMs} ms, ?limit=100 ${x.apiPageMs} ms; /metrics ${x.metricsMs} ms; page first render ${x.pageFirstRenderMs} ms ${JSON.stringify(x.pageMarks)}`,
        'measured against': 'ws p99 50 ms, snapshot 300 ms, page 1 s',
        ratio: `ws ${(x.wsP99Ms / 50).toFixed(2)}x, snapshot ${(x.snapshotMs / 300).toFixed(2)}x, page ${((x.pageFirstRenderMs ?? NaN) / 1000).toFixed(2)}x`,
        target: `ws ${x.wsP99Ms < 50 ? 'met' : 'MISSED'}, snapshot ${x.snapshotMs < 300 ? 'met' : 'MISSED'}, page ${(x.pageFirstRenderMs ?? Infinity) < 1000 ? 'met' : 'MISSED'}`,
      };
    } else if (wanted('farm')) {
      const hosts = numberArg('farm-hosts');
      const perHost = numberArg('farm-modems');
      const clients = numberArg('farm-clients');
      const f = await farmBenchmark(
        withDatabase,
        quick,
        hosts && perHost ? { hosts, modemsPerHost: perHost, clients: clients ?? 100 } : undefined,
      );
      const full = f.full;
      const fullTargets = {
        wsP99: full.wsP99Ms < 50,
        snapshot: full.snapshotMs < 300,
        page: full.pageFirstRenderMs !== null && full.pageFirstRenderMs < 1_000,
      };
      results['farm'] = {
        ...full,
        size: f.fullSize,
        lagRatio: f.lagRatio,
        oneHost: f.one,
        manyHosts: f.many,
        targets: { lagRatio: f.lagRatio <= 1.5, ...fullTargets },
      };
      const met = (ok: boolean): string => (ok ? 'met' : 'MISSED');
      const scenario = (x: typeof full): string => `${x.hosts} x ${x.modems / x.hosts}`;
      table[`farm journal lag p99, ${scenario(f.many)} vs ${scenario(f.one)}`] = {
        figure: `${f.many.journalLagP99Ms} ms (window ${f.many.windowJournalLagP99Ms} ms, ${f.many.journalLagSamples} transitions)`,
        'measured against': `${scenario(f.one)}: ${f.one.journalLagP99Ms} ms (window ${f.one.windowJournalLagP99Ms} ms)`,
        ratio: `${f.lagRatio}x`,
        target: `<= 1.5x (${met(f.lagRatio <= 1.5)})`,
      };
      for (const x of [f.one, f.many, full])
        table[`farm ${scenario(x)} (${x.clients} ws clients)`] = {
          figure: `boot ${x.bootSeconds} s; NOTIFY → ws p99 ${x.wsP99Ms} ms (${x.wsSamples}, ${x.wsLost} lost); snapshot ${x.snapshotMs} ms, ${Math.round(x.snapshotBytes / 1024)} KiB (${x.clients} at once: ${x.snapshotBurstMaxMs} ms); /api/modems ${x.apiModemsMs} ms, ?limit=100 ${x.apiPageMs} ms; /metrics ${x.metricsMs} ms; ${x.connections} connections; host CPU max ${(x.cpuPerHostMax * 100).toFixed(1)}%${x.pageFirstRenderMs !== null ? `; page first render ${x.pageFirstRenderMs} ms ${JSON.stringify(x.pageMarks)}` : ''}; inspector event loop delay p99 ${x.inspectorLoopDelayP99Ms} ms, max ${x.inspectorLoopDelayMaxMs} ms`,
          'measured against': x === full ? 'ws p99 50 ms, snapshot 300 ms, page 1 s' : '-',
          ratio:
            x === full
              ? `ws ${(x.wsP99Ms / 50).toFixed(2)}x, snapshot ${(x.snapshotMs / 300).toFixed(2)}x${x.pageFirstRenderMs !== null ? `, page ${(x.pageFirstRenderMs / 1000).toFixed(2)}x` : ''}`
              : '-',
          target:
            x === full
              ? `ws ${met(fullTargets.wsP99)}, snapshot ${met(fullTargets.snapshot)}, page ${full.pageFirstRenderMs === null ? 'not measured (no chromium)' : met(fullTargets.page)}`
              : '-',
        };
    }
    if (wanted('throughput')) {
      const t = await throughputBenchmark(
        throughputSettings(
          quick,
          process.argv.includes('--throughput-breakdown'),
          numberArg('throughput-repetitions'),
        ),
      );
      results['throughput'] = t;
      if (t.skipped !== null) console.log(`throughput: skipped: ${t.skipped}`);
      if (t.problems?.length) console.log(`throughput: problems during the run: ${t.problems.join('; ')}`);
      Object.assign(table, throughputRows(t));
    }
    console.table(table);
    await mkdir('bench/results', { recursive: true });
    await writeFile('bench/results/latest.json', `${JSON.stringify({ ...results, table }, null, 2)}\n`);
    console.log('written: bench/results/latest.json');
  } finally {
    await admin?.end();
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }
}

await main();
