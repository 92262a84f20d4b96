import { chmod, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { JournalWriter, type SpooledTransition } from '../../src/fleet/journalWriter.js';
import { Spool } from '../../src/fleet/spool.js';
import { openSql, type Sql } from '../../src/store/database.js';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';
import { freePort } from '../../src/util/ports.js';
import { appendTransitions } from '../../src/store/journal.js';
import { migrate } from '../../src/store/migrate.js';
import type { TransitionRecord } from '../../src/store/types.js';
import { until } from '../helpers/until.js';

let dir: string;
let cluster: EmbeddedCluster;
let sql: Sql;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-journal-'));
  await chmod(dir, 0o711);
  cluster = new EmbeddedCluster({ dir: join(dir, 'pg'), port: await freePort(), settings: { fsync: 'off' } });
  await cluster.start();
  // a short connect timeout so an outage is noticed quickly
  sql = openSql(cluster.url, { max: 4 });
  await migrate(sql);
});
afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await cluster?.stop();
  await rm(dir, { recursive: true, force: true });
});

const STATES = ['detecting', 'initializing.identity', 'online.serving', 'online.rotating'];
class Actors {
  private readonly seq = new Map<string, number>();
  readonly made: TransitionRecord[] = [];
  constructor(private readonly base: number) {}
  step(i: number): TransitionRecord {
    const imei = String(this.base + i);
    const seq = (this.seq.get(imei) ?? 0) + 1;
    this.seq.set(imei, seq);
    const r: TransitionRecord = {
      imei,
      seq,
      from: seq === 1 ? null : (STATES[(seq - 2) % 4] ?? null),
      to: STATES[(seq - 1) % 4] ?? 'detecting',
      event: `e${seq}`,
      at: new Date(),
    };
    this.made.push(r);
    return r;
  }
}

async function journalOf(prefix: string): Promise<{ imei: string; seq: number; event: string }[]> {
  return sql<{ imei: string; seq: number; event: string }[]>`
    select imei, seq, event from modem_transitions where imei like ${`${prefix}%`} order by imei, seq`;
}
const expected = (made: TransitionRecord[]) =>
  made
    .map((r) => ({ imei: r.imei, seq: r.seq, event: r.event }))
    .sort((a, b) => a.imei.localeCompare(b.imei) || a.seq - b.seq);

const soon = { timeoutMs: 20_000, intervalMs: 25 };

const newWriter = (spoolDir: string, maxBytes = 50_000_000, alerts: string[] = []) =>
  new JournalWriter({
    sink: { appendTransitions: (b) => appendTransitions(sql, b) },
    spool: new Spool<SpooledTransition>({ dir: spoolDir, maxBytes, fsync: 'always' }),
    retryBaseMs: 50,
    retryCapMs: 300,
    events: { emit: (_name, { alert }) => alerts.push(alert.kind) },
  });

describe('journal writer', () => {
  it('group commit: 5000 transitions of 100 modems in few round trips, in order', async () => {
    const actors = new Actors(361000000000000);
    const writer = newWriter(join(dir, 'spool-a'));
    await writer.start();
    for (let round = 0; round < 50; round++) for (let m = 0; m < 100; m++) writer.append(actors.step(m));
    await writer.flush();
    expect(await journalOf('361')).toEqual(expected(actors.made));
    expect(writer.stats.batches).toBeLessThanOrEqual(10);
    await writer.stop();
  });

  it('PostgreSQL down during churn: spooled in order, replayed on recovery, none lost or duplicated', async () => {
    const actors = new Actors(362000000000000);
    const writer = newWriter(join(dir, 'spool-b'));
    await writer.start();
    for (let m = 0; m < 20; m++) writer.append(actors.step(m));
    await writer.flush();
    await cluster.stop();
    for (let round = 0; round < 10; round++) for (let m = 0; m < 20; m++) writer.append(actors.step(m));
    await writer.flush();
    expect(writer.stats.mode).toBe('spooling');
    expect(writer.stats.spooled).toBeGreaterThan(0);
    await cluster.start();
    for (let m = 0; m < 20; m++) writer.append(actors.step(m)); // more while replaying
    await until(() => writer.stats.mode === 'direct', soon);
    await writer.flush();
    expect(await journalOf('362')).toEqual(expected(actors.made));
    expect(await readdir(join(dir, 'spool-b'))).toEqual(['current.jsonl']);
    await writer.stop();
  });

  it('a database that hangs instead of refusing: after the send timeout the rows go to the spool, then in once', async () => {
    const actors = new Actors(365000000000000);
    // a sink whose round trips hang (a server that stopped answering) until `hanging` is cleared
    let hanging = true;
    const held: (() => void)[] = [];
    const writer = new JournalWriter({
      sink: {
        appendTransitions: async (b) => {
          if (hanging) await new Promise<void>((resolve) => held.push(resolve));
          return appendTransitions(sql, b);
        },
      },
      spool: new Spool<SpooledTransition>({
        dir: join(dir, 'spool-hang'),
        maxBytes: 50_000_000,
        fsync: 'never',
      }),
      retryBaseMs: 50,
      retryCapMs: 300,
      sendTimeoutMs: 300,
    });
    await writer.start();
    for (let m = 0; m < 10; m++) writer.append(actors.step(m));
    // not stuck behind the hung round trip: spooled once it timed out
    await until(() => writer.stats.spooled === 10 && writer.stats.mode === 'spooling', soon);
    for (let m = 0; m < 10; m++) writer.append(actors.step(m));
    await writer.flush();
    expect(writer.stats.spooled).toBe(20);
    // the server answers again, and the hung round trips complete late: nothing twice, nothing lost
    hanging = false;
    for (const release of held.splice(0)) release();
    await until(() => writer.stats.mode === 'direct', soon);
    await writer.flush();
    expect(await journalOf('365')).toEqual(expected(actors.made));
    await writer.stop();
  });

  it('the spool survives a SIGKILLed supervisor and is replayed by the next one', async () => {
    const spoolDir = join(dir, 'spool-c');
    const unreachable = `postgres://u:p@127.0.0.1:${await freePort()}/x`;
    const child = execa(
      'node',
      [
        '--import',
        'tsx',
        'test/helpers/spoolThenHang.ts',
        spoolDir,
        unreachable,
        '363000000000000',
        '10',
        '5',
      ],
      {
        reject: false,
        buffer: false,
        stdout: 'pipe',
        stderr: 'inherit',
      },
    );
    const line = await new Promise<string>((resolve) =>
      child.stdout?.once('data', (d: Buffer) => resolve(d.toString())),
    );
    expect(JSON.parse(line)).toMatchObject({ spooled: 50, mode: 'spooling' });
    child.kill('SIGKILL');
    await child;

    const second = newWriter(spoolDir);
    await second.start();
    await until(() => second.stats.replayed === 50 && second.stats.mode === 'direct', soon);
    const rows = await journalOf('363');
    expect(rows.length).toBe(50);
    expect(rows.filter((r) => r.imei === '363000000000003').map((r) => r.event)).toEqual([
      'e1',
      'e2',
      'e3',
      'e4',
      'e5',
    ]);
    // replaying the same spool again stores nothing twice
    const spooled = rows.map((r) => ({
      imei: r.imei,
      seq: r.seq,
      from: null,
      to: 'online.serving',
      event: r.event,
      at: new Date(),
    }));
    const again = await appendTransitions(sql, spooled);
    expect(again.every((r) => r.stored === 0)).toBe(true);
    await second.stop();
  });

  it('a full spool raises an alert and drops; on recovery the gap is closed and later rows are stored', async () => {
    const actors = new Actors(364000000000000);
    const alerts: string[] = [];
    const writer = newWriter(join(dir, 'spool-d'), 2_000, alerts);
    await writer.start();
    writer.append(actors.step(0));
    await writer.flush();
    await cluster.stop();
    for (let i = 0; i < 40; i++) writer.append(actors.step(0));
    await writer.flush();
    expect(writer.stats.dropped).toBeGreaterThan(0);
    expect(alerts).toEqual(['spool_full']);
    await cluster.start();
    await until(() => writer.stats.mode === 'direct', soon);
    writer.append(actors.step(0));
    await writer.flush();
    const rows = await journalOf('364');
    expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 42 }, (_, k) => k + 1));
    expect(rows.filter((r) => r.event === 'journal.lost').length).toBe(writer.stats.dropped);
    await writer.stop();
  });
});
