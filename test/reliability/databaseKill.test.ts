import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import type { CommandOutcome } from '../../src/fleet/commandProcessor.js';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { Inspector } from '../../src/inspector/inspector.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { openSql } from '../../src/store/database.js';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';
import { freePort } from '../../src/util/ports.js';
import { migrate } from '../../src/store/migrate.js';
import { Store } from '../../src/store/store.js';
import type { TransitionRecord } from '../../src/store/types.js';
import { journalHoles } from '../helpers/db.js';
import { FAST_MODEM, TOKEN, labSupervisor, until } from '../helpers/farm.js';

/**
 * Issue 9, database faults: a PostgreSQL of its own (the shared test server must not die) is
 * SIGKILLed three times and restarted while 50 simulated modems on real PTYs are plugged,
 * unplugged, faulted and commanded. Afterwards the journal must hold exactly the transitions the
 * actors made (every one, once), every command accepted by the database must be carried out once
 * and finished with the outcome the supervisor reported, the supervisor must still run, and
 * `/ready` must have said 503 during each outage and 200 at the end.
 */

const N = 50;
const KILLS = 3;
const pause = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const unhandled: unknown[] = [];
const onUnhandled = (err: unknown): void => {
  unhandled.push(err);
};
process.on('unhandledRejection', onUnhandled);
afterAll(() => {
  process.off('unhandledRejection', onUnhandled);
});

async function postmasterPid(cluster: EmbeddedCluster): Promise<number> {
  return Number((await readFile(join(cluster.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
}

describe('reliability: database killed during churn', () => {
  it(`PostgreSQL SIGKILLed ${KILLS}× under ${N} churning modems: nothing lost, nothing twice`, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-rel-db-'));
    await chmod(dir, 0o711); // the postgres user must reach its data dir
    const cluster = new EmbeddedCluster({
      dir: join(dir, 'pg'),
      port: await freePort(),
      // a SIGKILL of the server is a process crash, not a power loss: the page cache survives it
      settings: { fsync: 'off', full_page_writes: 'off', max_connections: '60' },
    });
    await cluster.start();
    const url = cluster.url;
    const admin = openSql(url, { max: 2 });
    await migrate(admin);
    const sql = openSql(url, { max: 6 });
    const store = new Store({ sql, url, hostId: 'rel-host' });
    const lab = new SimLab({
      dir: join(dir, 'lab'),
      profiles: defaultProfiles(N, 91).map((p) => ({
        ...p,
        timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
      })),
    });
    await lab.start();

    const made: TransitionRecord[] = [];
    const executed = new Map<number, CommandOutcome[]>();
    const supervisor = new Supervisor(
      labSupervisor(store, lab, join(dir, 'state'), {
        modem: { ...FAST_MODEM, signalPollMs: 2_000, maxRecoveries: 1_000 },
        link: { presencePollMs: 200, timeouts: { probe: 500, query: 2_000, cfun: 2_000 }, addressPollMs: 50 },
        policy: {
          commandPollMs: 1_000,
          commandTimeoutMs: 30_000,
          healthFlushMs: 500,
          journalSendTimeoutMs: 2_000,
        },
      }),
    );
    supervisor.events.on('transition', (record) => made.push(record));
    supervisor.events.on('command.finished', ({ command, outcome }) =>
      executed.set(command.id, [...(executed.get(command.id) ?? []), outcome]),
    );
    const inspector = new Inspector({
      store,
      host: '127.0.0.1',
      port: 0,
      token: TOKEN,
      supervisor,
      listenHeartbeatIntervalMs: 500,
      listenHeartbeatTimeoutMs: 2_000,
    });
    const imeis = lab.modems.map((m) => m.imei);
    const plugged = imeis.map(() => true);
    const accepted: number[] = [];
    let insertFailures = 0;
    let stopChurn = false;
    let churn: Promise<void> = Promise.resolve();
    let readyPoll: Promise<void> = Promise.resolve();
    const readySeen: { at: number; status: number }[] = [];
    try {
      await supervisor.start();
      await inspector.start();
      await until(
        async () =>
          (await admin<{ n: number }[]>`select count(*)::int as n from modems where state = 'online'`)[0]
            ?.n === N,
        90_000,
        `${N} modems online`,
      );

      readyPoll = (async () => {
        while (!stopChurn) {
          const status = await fetch(`${inspector.url}/ready`, { signal: AbortSignal.timeout(5_000) })
            .then((r) => r.status)
            .catch(() => 0);
          readySeen.push({ at: Date.now(), status });
          await pause(150);
        }
      })();

      let rnd = 12345;
      const random = (n: number): number => {
        rnd = (rnd * 1103515245 + 12345) & 0x7fffffff;
        return rnd % n;
      };
      churn = (async () => {
        while (!stopChurn) {
          const i = random(N);
          const action = random(10);
          if (action < 2) {
            if (plugged[i]) await lab.unplug(i);
            else await lab.plug(i);
            plugged[i] = !plugged[i];
          } else if (action < 3) {
            lab.modem(i).setFaults({ dataCallRefused: random(2) === 0 });
          } else if (action < 4) {
            // the modem reset itself (RDY): journal rows while the database may be down
            if (plugged[i]) lab.modem(i).inject('\r\nRDY\r\n');
          } else {
            const kind = (['rotate', 'rotate', 'rotate', 'reset', 'disable', 'enable'] as const)[random(6)];
            try {
              const [row] = await admin<{ id: string }[]>`
                insert into modem_commands (imei, kind, requested_by)
                values (${imeis[i] ?? ''}, ${kind ?? 'rotate'}, 'reliability') returning id`;
              if (row) accepted.push(Number(row.id));
            } catch {
              insertFailures++; // the database is down (or a second pending rotate, sql/0011): nothing accepted
            }
          }
          await pause(50 + random(150));
        }
      })();

      const outages: { from: number; to: number }[] = [];
      for (let k = 0; k < KILLS; k++) {
        await pause(3_000);
        const pid = await postmasterPid(cluster);
        const from = Date.now();
        process.kill(pid, 'SIGKILL');
        await cluster.stop(); // reaps the killed postmaster
        try {
          // modems reset themselves while the database is down: their records must go through the
          // spool (the churn alone may journal nothing in a short outage: the journal records
          // lifecycle only). Several, since one may be unplugged meanwhile or in `error` (deaf to RDY).
          const spooledBefore = supervisor.journal.stats.spooled;
          for (const i of plugged.flatMap((p, i) => (p ? [i] : [])).slice(0, 5)) {
            try {
              lab.modem(i).inject('\r\nRDY\r\n');
            } catch {
              // unplugged by the churn meanwhile
            }
          }
          await until(() => supervisor.journal.stats.spooled > spooledBefore, {
            timeoutMs: 20_000,
            message: () =>
              `a record spooled while the database was down (journal ${JSON.stringify({ ...supervisor.journal.stats, ...supervisor.journal.lag })}, states ${JSON.stringify([...supervisor.modems.values()].slice(0, 5).map((m) => m.top))})`,
          });
          await pause(1_500 + 500 * k);
        } finally {
          // back up even when a check failed: the teardown needs the database
          await cluster.start();
        }
        outages.push({ from, to: Date.now() });
      }
      await pause(3_000);
      stopChurn = true;
      await churn;
      await readyPoll;
      for (let i = 0; i < N; i++) lab.modem(i).setFaults({ dataCallRefused: false });

      // the supervisor never stopped, and nothing escaped as an unhandled rejection
      expect(supervisor.status().started).toBe(true);
      expect(unhandled).toEqual([]);

      // /ready: 503 (or no answer within the probe time) in every outage, 200 once it is over
      for (const { from, to } of outages) {
        const during = readySeen.filter((r) => r.at >= from && r.at <= to + 1_000);
        expect(during.some((r) => r.status === 503)).toBe(true);
      }
      await until(
        async () => (await fetch(`${inspector.url}/ready`)).status === 200,
        30_000,
        '/ready back to 200',
      );

      // every accepted command finished, carried out exactly once, with the outcome it was given
      await until(
        async () =>
          (await admin`select 1 from modem_commands where status in ('pending', 'running')`).length === 0,
        60_000,
        'commands finished',
      );
      const commands = await admin<{ id: string; status: string }[]>`
        select id, status from modem_commands order by id`;
      const stored = new Map(commands.map((c) => [Number(c.id), c.status]));
      // enough commands to mean something (how many depends on the machine's speed; speed is not tested)
      expect(accepted.length).toBeGreaterThan(10);
      for (const id of accepted) expect(stored.has(id)).toBe(true);
      for (const [id, status] of stored) {
        const runs = executed.get(id) ?? [];
        expect({ id, runs: runs.length }).toEqual({ id, runs: 1 });
        expect({ id, status }).toEqual({ id, status: runs[0]?.ok ? 'done' : 'failed' });
      }

      // the journal holds exactly what the actors made: none lost, none twice, none invented
      await until(
        async () => {
          await supervisor.journal.flush();
          return supervisor.journal.stats.mode === 'direct' && supervisor.journal.lag.queued === 0;
        },
        60_000,
        'journal caught up',
      );
      // modems may still be coming back from resets (and journaling it): stop the farm, which flushes the
      // journal, so that everything the actors made can be compared, the last records included
      await inspector.stop();
      await supervisor.stop();
      const rows = await admin<
        { imei: string; seq: number; from_state: string | null; to_state: string; event: string }[]
      >`
        select imei, seq, from_state, to_state, event from modem_transitions order by imei, seq`;
      const key = (r: { imei: string; seq: number }): string => `${r.imei}#${r.seq}`;
      const inDb = new Map(rows.map((r) => [key(r), `${r.from_state ?? ''}>${r.to_state}:${r.event}`]));
      const byActors = new Map(made.map((r) => [key(r), `${r.from ?? ''}>${r.to}:${r.event}`]));
      expect(made.length).toBe(byActors.size); // the actors never reused a seq
      const lost = [...byActors].filter(([k, v]) => inDb.get(k) !== v);
      const invented = [...inDb.keys()].filter((k) => !byActors.has(k));
      expect(lost).toEqual([]);
      expect(invented).toEqual([]);
      // the outages really hit the journal: records went through the spool and came back
      const stats = supervisor.journal.stats;
      expect(stats.spooled).toBeGreaterThan(0);
      expect(stats.replayed).toBe(stats.spooled);
      expect(stats.dropped).toBe(0);
      const holes = await journalHoles(admin);
      expect(holes).toEqual([]);
      console.log(
        `database killed ${KILLS}×: ${made.length} transitions and ${stored.size} commands ` +
          `(${insertFailures} inserts refused while down), ${stats.spooled} spooled and replayed, outages ${outages.map((o) => o.to - o.from).join('/')} ms`,
      );
    } finally {
      stopChurn = true;
      await churn.catch(() => undefined);
      await readyPoll.catch(() => undefined);
      await inspector.stop().catch(() => undefined);
      await supervisor.stop().catch(() => undefined);
      await lab.stop();
      await sql.end({ timeout: 1 });
      await admin.end({ timeout: 1 });
      await cluster.stop();
      await rm(dir, { recursive: true, force: true });
    }
    const left = await execa('pgrep', ['-f', `${dir}`], { reject: false });
    expect(left.stdout).toBe('');
  }, 300_000);
});
