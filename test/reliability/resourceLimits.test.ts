import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { journalHoles } from '../helpers/db.js';
import { selfResets, startFarm, until, type TestFarm } from '../helpers/farm.js';

/**
 * Issue 9, resource limits: the journal spool on a file system that is read-only, or full, while
 * PostgreSQL is away. The farm keeps serving, an alert says what happened (stored once the database
 * is back, with the time it was raised), and the journal stays contiguous: what could not be kept
 * is recorded as `journal.lost`, never as a silent hole. (More modems than free ports:
 * test/integration/supervisor.test.ts, `no_free_port`.)
 *
 * Real file systems: a tmpfs mounted read-only, and one of a few pages. Needs root (CI runs as root).
 */

let farm: TestFarm | undefined;
let mounted: string | undefined;

afterEach(async () => {
  if (mounted) await execa('umount', ['-l', mounted], { reject: false });
  mounted = undefined;
  await farm?.stop();
  farm = undefined;
});

async function mountSpool(dir: string, options: string): Promise<void> {
  const spool = join(dir, 'state', 'spool');
  await mkdir(spool, { recursive: true });
  await execa('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', spool]);
  mounted = spool;
}

const onlineCount = async (f: TestFarm): Promise<number> =>
  (await f.db.sql<{ n: number }[]>`select count(*)::int as n from modems where state = 'online'`)[0]?.n ?? 0;

/** Every modem's journal runs 1..seq without a hole; returns how many rows say journal.lost. */
async function contiguousJournal(f: TestFarm): Promise<number> {
  const holes = await journalHoles(f.db.sql);
  expect(holes).toEqual([]);
  const [row] = await f.db.sql<{ n: number }[]>`
    select count(*)::int as n from modem_transitions where event = 'journal.lost'`;
  return row?.n ?? 0;
}

/** Cut the database until the journal has dropped records, then bring it back and let it settle. */
async function outageUntilDropped(f: TestFarm): Promise<Date> {
  const cutAt = new Date();
  f.dbProxy.cut();
  // modems that reset themselves journal a few records a second
  const stopResets = selfResets(f.lab, 250);
  await until(() => f.supervisor.journal.stats.dropped > 0, 30_000, 'records dropped');
  await new Promise((r) => setTimeout(r, 1_000));
  f.dbProxy.up();
  await until(
    async () => {
      await f.supervisor.journal.flush();
      return f.supervisor.journal.stats.mode === 'direct' && f.supervisor.alerts.waiting === 0;
    },
    30_000,
    'journal and alerts back in PostgreSQL',
  );
  // the placeholders go in once the database is back (or with the next record of the modem)
  await new Promise((r) => setTimeout(r, 1_500));
  await stopResets();
  await f.supervisor.journal.flush();
  return cutAt;
}

describe('resource limits: the spool', () => {
  it('spool on a read-only file system: the farm starts and serves, an alert, losses marked', async () => {
    const f = (farm = await startFarm({
      modems: 4,
      seed: 5,
      prepare: (dir) => mountSpool(dir, 'ro,size=64k'),
    }));
    await until(async () => (await onlineCount(f)) === 4, 30_000, 'four online');
    const [startAlert] = await f.db.sql<{ kind: string; message: string }[]>`
      select kind, message from alerts where kind = 'spool_unavailable'`;
    expect(startAlert?.message).toMatch(
      /cannot open the spool in .*spool: .*read-only file system.*without a spool/i,
    );
    expect((await fetch(`${f.url}/ready`)).status).toBe(200);

    await outageUntilDropped(f);
    expect(f.supervisor.status().started).toBe(true);
    expect(f.supervisor.journal.stats.spooled).toBe(0);
    const lost = await contiguousJournal(f);
    expect(lost).toBe(f.supervisor.journal.stats.dropped);
    await until(async () => (await onlineCount(f)) === 4, 20_000, 'still four online');
    expect((await fetch(`${f.url}/ready`)).status).toBe(200);
  });

  it('spool file system full during an outage: spooled what fits, alert spool_full raised when it happened', async () => {
    const f = (farm = await startFarm({
      modems: 4,
      seed: 6,
      prepare: (dir) => mountSpool(dir, 'size=4k'),
    }));
    await until(async () => (await onlineCount(f)) === 4, 30_000, 'four online');
    const cutAt = await outageUntilDropped(f);
    const stats = f.supervisor.journal.stats;
    expect(stats.spooled).toBeGreaterThan(0); // what fitted was kept and replayed
    expect(stats.replayed).toBe(stats.spooled);
    const alerts = await f.db.sql<{ message: string; raised_at: Date }[]>`
      select message, raised_at from alerts where kind = 'spool_full'`;
    expect(alerts.length).toBe(1);
    expect(alerts[0]?.message).toMatch(/file system of the spool .* is full \(ENOSPC\)/);
    // raised during the outage, stored after it
    expect(alerts[0]?.raised_at.getTime()).toBeGreaterThanOrEqual(cutAt.getTime() - 1_000);
    const lost = await contiguousJournal(f);
    expect(lost).toBe(stats.dropped);
    expect(f.supervisor.status().started).toBe(true);
    await until(async () => (await onlineCount(f)) === 4, 20_000, 'still four online');
  });
});
