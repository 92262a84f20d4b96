import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { createTestDatabase, journalHoles, type TestDatabase } from '../helpers/db.js';
import { until } from '../helpers/until.js';

let db: TestDatabase;
let dir: string;
let lab: SimLab;
const children: ResultPromise[] = [];

beforeEach(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-daemon-'));
  const profiles = defaultProfiles(4, 5).map((p) => ({
    ...p,
    timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
  }));
  lab = new SimLab({ dir: join(dir, 'lab'), profiles });
  await lab.start();
});
afterEach(async () => {
  for (const c of children.splice(0)) {
    c.kill('SIGKILL');
    await c.catch(() => undefined);
  }
  await lab.stop();
  await db.drop();
  await rm(dir, { recursive: true, force: true });
});

/** Wrapped: an async function returning the child itself would wait for it to exit. */
async function daemon(): Promise<{ child: ResultPromise; output: () => string }> {
  const configFile = join(dir, 'config.json');
  await writeFile(
    configFile,
    JSON.stringify({
      scan: lab.scan,
      hotplug: 'watch',
      spoolFsync: 'never',
      modem: {
        probeRetryMs: 100,
        registrationPollMs: 100,
        signalPollMs: 1000,
        backoffBaseMs: 100,
        detachMs: 100,
      },
    }),
  );
  const child = execa('node', ['bin/modemfleet.js', 'run', '--config', configFile], {
    reject: false,
    env: {
      DATABASE_URL: db.url,
      MODEMFLEET_HOST_ID: 'host-k',
      MODEMFLEET_STATE_DIR: join(dir, 'state'),
      MODEMFLEET_HTTP: '127.0.0.1:0',
      MODEMFLEET_LOG_LEVEL: 'info',
    },
  });
  children.push(child);
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return { child, output: () => out };
}

const counts = async () => {
  const rows = await db.sql<{ state: string; n: number }[]>`
    select state, count(*)::int as n from modems group by state`;
  return Object.fromEntries(rows.map((r) => [r.state, r.n])) as Record<string, number>;
};

describe('modemfleet run', () => {
  it('SIGKILL and start again: the same farm, same ports, desired states kept, journal contiguous', async () => {
    const { child: first } = await daemon();
    await until(async () => (await counts())['online'] === 4, {
      timeoutMs: 30_000,
      intervalMs: 100,
      message: 'online',
    });
    const imei = lab.modem(2).imei;
    await db.sql`insert into modem_commands (imei, kind, requested_by) values (${imei}, 'disable', 'test')`;
    await until(async () => (await counts())['disabled'] === 1, {
      timeoutMs: 15_000,
      intervalMs: 100,
      message: 'disabled',
    });
    const ports =
      await db.sql`select imei, http_port, socks_port, routing_table from allocations order by imei`;

    first.kill('SIGKILL');
    const killed = await first;
    expect(killed.signal).toBe('SIGKILL');
    const seqBefore = await db.sql<
      { imei: string; seq: number }[]
    >`select imei, seq::int from modems order by imei`;

    expect(String(killed.stderr)).toMatch(
      /generated an API token \(kept in .*api-token, mode 0600; read it there/,
    );
    // the path is logged, never the token (the journal is read by more people than the state dir)
    const generated = (await readFile(join(dir, 'state', 'api-token'), 'utf8')).trim();
    expect(String(killed.stderr) + String(killed.stdout)).not.toContain(generated);

    const { child: second, output } = await daemon();
    await until(
      async () => {
        // the database still shows the old farm: wait until every modem was journaled again
        const seqs = await db.sql<
          { imei: string; seq: number }[]
        >`select imei, seq::int from modems order by imei`;
        const c = await counts();
        return (
          seqs.every((r, i) => r.seq > (seqBefore[i]?.seq ?? Infinity)) &&
          c['online'] === 3 &&
          c['disabled'] === 1
        );
      },
      { timeoutMs: 30_000, intervalMs: 100, message: 'same farm after SIGKILL' },
    );
    // the restarted supervisor journaled the modems again (seq went on from where it was)
    const seqAfter = await db.sql<
      { imei: string; seq: number }[]
    >`select imei, seq::int from modems order by imei`;
    seqAfter.forEach((r, i) => expect(r.seq).toBeGreaterThan(seqBefore[i]?.seq ?? Infinity));
    expect(
      await db.sql`select imei, http_port, socks_port, routing_table from allocations order by imei`,
    ).toEqual(ports);
    expect(lab.modem(2).model.cfun).toBe(4);
    const holes = await journalHoles(db.sql);
    expect(holes).toEqual([]);

    // the inspector runs with the token kept from the first start
    await until(() => Promise.resolve(/"inspector":"http:\/\/127\.0\.0\.1:\d+"/.test(output())), {
      timeoutMs: 10_000,
      intervalMs: 100,
      message: 'inspector url',
    });
    const url = /"inspector":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(output())?.[1] ?? '';
    const token = (await readFile(join(dir, 'state', 'api-token'), 'utf8')).trim();
    const res = await fetch(`${url}/api/modems`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await res.json()) as unknown[]).length).toBe(4);
    expect((await fetch(`${url}/ready`)).status).toBe(200);

    second.kill('SIGTERM');
    const stopped = await second;
    expect({ code: stopped.exitCode, signal: stopped.signal }).toEqual({ code: 0, signal: undefined });
    expect(String(stopped.stdout)).toMatch(/"msg":"modemfleet stopped"/);
    expect(String(stopped.stderr)).not.toMatch(/generated an API token/);
    const [host] = await db.sql<
      { stopped: boolean }[]
    >`select stopped_at is not null as stopped from hosts where id = 'host-k'`;
    expect(host?.stopped).toBe(true);
  }, 90_000);
});
