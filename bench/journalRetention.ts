import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSql, type Sql } from '../src/store/database.js';
import { appendTransitions, pgTextArray } from '../src/store/journal.js';
import { defaultMigrationsDir, migrate } from '../src/store/migrate.js';
import type { TransitionRecord } from '../src/store/types.js';
import { sleep } from '../src/util/time.js';

/**
 * Journal retention and its migration, on a farm of 300 modems (`--only=retention,migration`; not
 * in the default run: it loads millions of rows).
 *
 * retention: a day of journal past the retention (`rowsPerDay`, default 1,000,000) next to a day
 * within it, pruned while an appender journals a batch for every modem each 100 ms. Compared:
 * (a) ours, the plain table and prune_modem_transitions in batches of 5,000; (b) the same rows in
 * daily range partitions of `at` (primary key (imei, seq, at)), pruned by DROP of the day's
 * partition, and by DETACH PARTITION CONCURRENTLY then DROP; each also with a reader that keeps a
 * transaction open on the journal for 2 s (a report, a slow API call). Figures: the prune's time,
 * append latency before and during it, the locks the pruning session held (pg_locks, sampled every
 * 10 ms) and the most sessions seen waiting for a lock.
 *
 * migration: `migrationRows` (default 10,000,000) journal rows in the schema before 0004, then 0004
 * applied by `migrate` while the old append path journals every 50 ms; figures: time, locks, the
 * longest append during it. For comparison, the two ways to a partitioned journal on the same rows:
 * copying it into a partitioned table, and attaching it as the first partition.
 */
export interface RetentionFigures {
  rowsPerDay: number;
  modems: number;
  cases: PruneCase[];
}

export interface PruneCase {
  name: string;
  pruneMs: number;
  rowsDeleted: number;
  /** Longest single statement of the prune (ms). */
  longestStatementMs: number;
  appendsBefore: LatencySummary;
  appendsDuring: LatencySummary;
  locks: string[];
  maxWaitingForLock: number;
}

export interface LatencySummary {
  n: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export interface MigrationFigures {
  rows: number;
  loadSeconds: number;
  tableMiB: number;
  migrationMs: number;
  locks: string[];
  appendsDuring: LatencySummary;
  appendsBefore: LatencySummary;
  alternatives: { name: string; ms: number; locks: string }[];
}

const MODEMS = 300;
const BASE_IMEI = 359100000000000;

function summary(values: number[]): LatencySummary {
  const s = [...values].sort((a, b) => a - b);
  const at = (p: number): number =>
    Number((s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0).toFixed(1));
  return { n: s.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: Number((s.at(-1) ?? 0).toFixed(1)) };
}

async function freshDatabase(admin: Sql, adminUrl: string, name: string): Promise<{ sql: Sql; url: string }> {
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.unsafe(`create database ${name}`);
  const u = new URL(adminUrl);
  u.pathname = `/${name}`;
  return { sql: openSql(u.toString(), { max: 4 }), url: u.toString() };
}

/** Samples the locks a backend holds, and how many sessions wait for a lock, until stopped. */
function lockSampler(
  sql: Sql,
  pid: () => number | undefined,
): { stop: () => Promise<{ locks: string[]; maxWaiting: number }> } {
  const seen = new Set<string>();
  let maxWaiting = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const p = pid();
      const rows = await sql<{ what: string }[]>`
        select coalesce(relation::regclass::text, locktype) || ': ' || mode || (case when granted then '' else ' (waiting)' end) as what
        from pg_locks where pid = ${p ?? -1} and locktype in ('relation', 'object')
          and coalesce(relation::regclass::text, '') not like 'pg_%'`;
      for (const r of rows) seen.add(r.what);
      // sessions other than the pruner waiting for a lock (appends, or the reader)
      const [w] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where wait_event_type = 'Lock' and pid <> ${p ?? -1}`;
      maxWaiting = Math.max(maxWaiting, w?.n ?? 0);
      await sleep(10);
    }
  })();
  // (an error surfaces in stop(); when the run fails elsewhere first, that error is the one reported)
  loop.catch(() => undefined);
  return {
    stop: async () => {
      running = false;
      await loop;
      return { locks: [...seen].sort(), maxWaiting };
    },
  };
}

/** Appends a batch for every modem every `everyMs` until stopped; latency of each with its start. */
function appender(
  append: (batch: TransitionRecord[]) => Promise<unknown>,
  firstSeq: number,
  everyMs: number,
): { stop: () => Promise<{ at: number; ms: number }[]> } {
  const samples: { at: number; ms: number }[] = [];
  let running = true;
  let seq = firstSeq;
  const loop = (async () => {
    while (running) {
      const batch = Array.from({ length: MODEMS }, (_, m) => ({
        imei: String(BASE_IMEI + m),
        seq,
        from: 'online.serving',
        to: seq % 2 ? 'online.rotating' : 'online.serving',
        event: 'bench',
        at: new Date(),
        host: 'bench',
      }));
      const start = performance.now();
      await append(batch);
      samples.push({ at: start, ms: performance.now() - start });
      seq++;
      const wait = everyMs - (performance.now() - start);
      if (wait > 0) await sleep(wait);
    }
  })();
  // (an error surfaces in stop(); when the run fails elsewhere first, that error is the one reported)
  loop.catch(() => undefined);
  return {
    stop: async () => {
      running = false;
      await loop;
      return samples;
    },
  };
}

/** Journal rows for every modem: seqs from..to, `at` spread evenly over [start, start + 1 day). */
async function loadRows(sql: Sql, table: string, fromSeq: number, toSeq: number, start: Date): Promise<void> {
  const span = toSeq - fromSeq + 1;
  await sql.begin(async (tx) => {
    // test data: no triggers (the notification of millions of rows is not what is measured)
    await tx`set local session_replication_role = replica`;
    await tx.unsafe(
      `insert into ${table} (imei, seq, from_state, to_state, event, detail, at, host_id)
       select (${BASE_IMEI} + m)::text, s, 'online.serving', 'online.rotating', 'rotate', '{}',
              $1::timestamptz + make_interval(secs => 86400.0 * (s - ${fromSeq}) / ${span}), 'bench'
       from generate_series(0, ${MODEMS - 1}) m, generate_series(${fromSeq}, ${toSeq}) s`,
      [start.toISOString()],
    );
  });
}

async function modemsAt(sql: Sql, seq: number): Promise<void> {
  await sql`insert into hosts (id, name) values ('bench', 'bench') on conflict do nothing`;
  await sql.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`insert into modems (imei, host_id, state, seq)
      select (${BASE_IMEI}::bigint + m)::text, 'bench', 'online', ${seq}::bigint
      from generate_series(0, ${MODEMS - 1}::int) m`;
  });
}

const DAY = 86_400_000;
const utcDay = (t: number): Date => new Date(Math.floor(t / DAY) * DAY);

export async function journalRetention(adminUrl: string, rowsPerDay = 1_000_000): Promise<RetentionFigures> {
  const admin = openSql(adminUrl, { max: 1 });
  const perModem = Math.ceil(rowsPerDay / MODEMS);
  const oldDay = utcDay(Date.now() - 95 * DAY); // wholly past a 90-day retention
  const youngDay = utcDay(Date.now() - 2 * DAY);
  const cases: PruneCase[] = [];
  try {
    for (const variant of [
      'plain',
      'plain+reader',
      'drop',
      'drop+reader',
      'detach',
      'detach+reader',
    ] as const) {
      const { sql, url } = await freshDatabase(admin, adminUrl, `mf_bench_retention_${process.pid}`);
      const probe = openSql(url, { max: 1 });
      try {
        await migrate(sql);
        await modemsAt(sql, 2 * perModem);
        const partitioned = !variant.startsWith('plain');
        const table = partitioned ? 'pt_transitions' : 'modem_transitions';
        if (partitioned) {
          // the alternative design: daily range partitions of `at`; the unique key must hold `at`
          await sql.unsafe(`
            create table pt_transitions (like modem_transitions including defaults including constraints,
              primary key (imei, seq, at)) partition by range (at)`);
          for (const day of [oldDay.getTime(), ...[0, 1, 2, 3, 4].map((d) => youngDay.getTime() + d * DAY)]) {
            const name = `pt_${new Date(day).toISOString().slice(0, 10).replaceAll('-', '')}`;
            await sql.unsafe(`create table ${name} partition of pt_transitions
              for values from ('${new Date(day).toISOString()}') to ('${new Date(day + DAY).toISOString()}')`);
          }
        }
        await loadRows(sql, table, 1, perModem, oldDay);
        await loadRows(sql, table, perModem + 1, 2 * perModem, youngDay);
        await sql.unsafe(`vacuum analyze ${table}`);
        await sql.unsafe('vacuum analyze modems');
        await sql.unsafe('checkpoint');

        const column = (
          batch: TransitionRecord[],
          f: (r: TransitionRecord) => string | number | null,
        ): string => pgTextArray(batch.map(f));
        const append = partitioned
          ? (batch: TransitionRecord[]) =>
              sql`insert into pt_transitions (imei, seq, from_state, to_state, event, at, host_id)
                select * from unnest(${column(batch, (r) => r.imei)}::text[], ${column(batch, (r) => r.seq)}::bigint[],
                  ${column(batch, (r) => r.from)}::text[], ${column(batch, (r) => r.to)}::text[],
                  ${column(batch, (r) => r.event)}::text[], ${column(batch, (r) => r.at.toISOString())}::timestamptz[],
                  ${column(batch, (r) => r.host ?? null)}::text[])`
          : (batch: TransitionRecord[]) => appendTransitions(sql, batch);
        const writer = appender(append, 2 * perModem + 1, 100);
        await sleep(5_000);
        const pruner = openSql(url, { max: 1 });
        try {
          const [{ pid } = { pid: -1 }] = await pruner<{ pid: number }[]>`select pg_backend_pid() as pid`;
          let reader: Promise<unknown> | undefined;
          if (variant.endsWith('+reader')) {
            // a session that reads the journal in a transaction held for 2 s
            reader = sql.begin(async (tx) => {
              await tx.unsafe(`select count(*) from ${table} where imei = '${BASE_IMEI}'`);
              await sleep(2_000);
            });
            await sleep(100);
          }
          const sampler = lockSampler(probe, () => pid);
          const started = performance.now();
          const pruneStart = performance.now();
          let deleted = 0;
          let longest = 0;
          const timed = async (fn: () => Promise<unknown>): Promise<void> => {
            const t = performance.now();
            await fn();
            longest = Math.max(longest, performance.now() - t);
          };
          if (!partitioned) {
            for (;;) {
              let n = 0;
              await timed(async () => {
                const [row] = await pruner<{ n: number }[]>`
                  select prune_modem_transitions(interval '90 days', 5000)::int as n`;
                n = row?.n ?? 0;
              });
              deleted += n;
              if (n === 0) break;
              await sleep(20);
            }
          } else {
            const name = `pt_${oldDay.toISOString().slice(0, 10).replaceAll('-', '')}`;
            deleted = perModem * MODEMS;
            if (variant.startsWith('drop')) await timed(() => pruner.unsafe(`drop table ${name}`));
            else {
              await timed(() =>
                pruner.unsafe(`alter table pt_transitions detach partition ${name} concurrently`),
              );
              await timed(() => pruner.unsafe(`drop table ${name}`));
            }
          }
          const pruneMs = performance.now() - pruneStart;
          const { locks, maxWaiting } = await sampler.stop();
          await sleep(1_000);
          const samples = await writer.stop();
          await reader;
          // an append that overlapped the prune counts as during it (also one that began just before)
          const before = samples.filter((s) => s.at + s.ms < started).map((s) => s.ms);
          const during = samples
            .filter((s) => s.at + s.ms >= started && s.at <= started + pruneMs)
            .map((s) => s.ms);
          cases.push({
            name: variant,
            pruneMs: Math.round(pruneMs),
            rowsDeleted: deleted,
            longestStatementMs: Math.round(longest),
            appendsBefore: summary(before),
            appendsDuring: summary(during.length ? during : [samples.at(-1)?.ms ?? 0]),
            locks,
            maxWaitingForLock: maxWaiting,
          });
        } finally {
          await pruner.end();
        }
      } finally {
        await probe.end();
        await sql.end();
      }
    }
  } finally {
    await admin.unsafe(`drop database if exists mf_bench_retention_${process.pid} with (force)`);
    await admin.end();
  }
  return { rowsPerDay: perModem * MODEMS, modems: MODEMS, cases };
}

export async function journalMigration(adminUrl: string, rows = 10_000_000): Promise<MigrationFigures> {
  const admin = openSql(adminUrl, { max: 1 });
  const name = `mf_bench_migration_${process.pid}`;
  const { sql, url } = await freshDatabase(admin, adminUrl, name);
  const probe = openSql(url, { max: 1 });
  const migrator = openSql(url, { max: 1 });
  const dir = await mkdtemp(join(tmpdir(), 'mf-migrations-'));
  try {
    // the schema as released before 0004
    await cp(defaultMigrationsDir(), dir, { recursive: true });
    await rm(join(dir, '0004_journal.sql'));
    await migrate(sql, { dir });
    const perModem = Math.ceil(rows / MODEMS);
    await modemsAt(sql, perModem);
    const loadStart = performance.now();
    const chunk = 5_000;
    for (let from = 1; from <= perModem; from += chunk)
      await loadRows(
        sql,
        'modem_transitions',
        from,
        Math.min(perModem, from + chunk - 1),
        new Date(Date.now() - 60 * DAY),
      );
    await sql.unsafe('vacuum analyze modem_transitions');
    await sql.unsafe('checkpoint');
    const loadSeconds = Math.round((performance.now() - loadStart) / 1000);
    const [size] = await sql<{ mib: number }[]>`
      select (pg_total_relation_size('modem_transitions') / 1048576)::int as mib`;

    // the old append path (0001's append_transitions(jsonb)) journals on while 0004 is applied
    const oldAppend = (batch: TransitionRecord[]) =>
      sql`select * from append_transitions(${sql.json(
        batch.map((r) => ({
          imei: r.imei,
          seq: r.seq,
          from_state: r.from,
          to_state: r.to,
          event: r.event,
          at: r.at.toISOString(),
          host_id: r.host,
        })),
      )}::jsonb)`;
    const writer = appender(oldAppend, perModem + 1, 50);
    await sleep(3_000);
    const [{ pid } = { pid: -1 }] = await migrator<{ pid: number }[]>`select pg_backend_pid() as pid`;
    const sampler = lockSampler(probe, () => pid);
    const started = performance.now();
    await migrate(migrator);
    const migrationMs = performance.now() - started;
    const { locks } = await sampler.stop();
    await sleep(1_000);
    const samples = await writer.stop();

    // the alternatives, each as one migration would run it (one transaction, the journal locked)
    const alternatives: MigrationFigures['alternatives'] = [];
    const alt = async (label: string, locksHeld: string, statements: string): Promise<void> => {
      const t = performance.now();
      let failed: string | undefined;
      await sql
        .begin(async (tx) => {
          await tx.unsafe(statements);
          throw Object.assign(new Error('rollback'), { rollback: true });
        })
        .catch((err: unknown) => {
          if (!(err as { rollback?: boolean }).rollback) failed = (err as Error).message;
        });
      alternatives.push({
        name: label,
        ms: Math.round(performance.now() - t),
        locks: failed ? `failed: ${failed}` : locksHeld,
      });
    };
    const months = Array.from({ length: 5 }, (_, k) => {
      const d = new Date(Date.now() - (90 - 30 * k) * DAY);
      return `create table pt_${k} partition of pt for values from ('${utcDay(d.getTime()).toISOString()}') to ('${utcDay(d.getTime() + 30 * DAY).toISOString()}');`;
    }).join('\n');
    await alt(
      'copy into a partitioned table (monthly partitions of at, primary key (imei, seq, at))',
      'ACCESS EXCLUSIVE on modem_transitions for the whole copy (appends wait)',
      `lock table modem_transitions in access exclusive mode;
       create table pt (like modem_transitions including defaults including constraints, primary key (imei, seq, at))
         partition by range (at);
       create table pt_old partition of pt for values from (minvalue) to ('${utcDay(Date.now() - 90 * DAY).toISOString()}');
       ${months}
       insert into pt select * from modem_transitions;`,
    );
    await alt(
      'attach the table as the first partition (validation scan, unique index (imei, seq, at) built)',
      'ACCESS EXCLUSIVE on modem_transitions for the scan and the index build',
      `alter table modem_transitions drop constraint modem_transitions_host_id_check;
       alter table modem_transitions drop constraint modem_transitions_imei_check;
       alter table modem_transitions rename to mt_legacy;
       create table modem_transitions (like mt_legacy including defaults including constraints) partition by range (at);
       create unique index mt_legacy_key on mt_legacy (imei, seq, at);
       alter table modem_transitions attach partition mt_legacy for values from (minvalue) to ('${new Date().toISOString()}');
       alter table modem_transitions add constraint modem_transitions_key unique (imei, seq, at);`,
    );
    const before = samples.filter((s) => s.at + s.ms < started).map((s) => s.ms);
    const during = samples
      .filter((s) => s.at + s.ms >= started && s.at <= started + migrationMs)
      .map((s) => s.ms);
    return {
      rows: perModem * MODEMS,
      loadSeconds,
      tableMiB: size?.mib ?? 0,
      migrationMs: Math.round(migrationMs),
      locks,
      appendsBefore: summary(before),
      appendsDuring: summary(during.length ? during : [0]),
      alternatives,
    };
  } finally {
    await migrator.end();
    await probe.end();
    await sql.end();
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
    await rm(dir, { recursive: true, force: true });
  }
}
