import { appendFileSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { openSql } from '../../src/store/database.js';
import { freePort } from '../../src/util/ports.js';
import { journalHoles } from '../helpers/db.js';
import { until } from '../helpers/farm.js';

/**
 * Issue 9, database faults in the production topology: `modemfleet run` with its own embedded
 * PostgreSQL (no DATABASE_URL). The server is SIGKILLed three times (what the OOM killer does);
 * the daemon must start it again each time, keep running, report the outage on `/ready`, record a
 * `database_restarted` alert, and lose no transition.
 */

const TOKEN = 'reliability-token-0123456789';
const N = 3;
const KILLS = Number(process.env['MF_KILLS'] ?? 3);
let dir: string;
let lab: SimLab;
let child: ResultPromise | undefined;
let url = '';
let pgPort = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'mf-rel-embedded-'));
  await chmod(dir, 0o711); // the postgres user must reach the state dir
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 17).map((p) => ({
      ...p,
      timings: { bootMs: 30, latencyMs: 1, attachMs: 100, resetMs: 300 },
    })),
  });
  await lab.start();
});

afterAll(async () => {
  if (child) {
    child.kill('SIGKILL');
    await child.catch(() => undefined);
  }
  // a SIGKILLed daemon leaves its postgres behind: stop it
  const pid = await postmasterPid().catch(() => 0);
  if (pid > 0) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await lab.stop();
  await rm(dir, { recursive: true, force: true });
});

async function postmasterPid(): Promise<number> {
  const text = await readFile(join(dir, 'state', 'postgres', 'data', 'postmaster.pid'), 'utf8');
  return Number(text.split('\n')[0]);
}

const api = (path: string): Promise<Response> =>
  fetch(`${url}${path}`, {
    headers: { authorization: `Bearer ${TOKEN}` },
    signal: AbortSignal.timeout(5_000),
  });

async function onlineCount(): Promise<number> {
  const res = await api('/api/modems').catch(() => undefined);
  if (res?.status !== 200) return -1;
  const modems = (await res.json()) as { state: string }[];
  return modems.filter((m) => m.state === 'online').length;
}

describe('modemfleet run with its embedded PostgreSQL', () => {
  it('the server SIGKILLed three times: started again each time, the daemon keeps running, nothing lost', async () => {
    pgPort = await freePort();
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
          detachMs: 500,
        },
      }),
    );
    let out = '';
    child = execa('node', ['bin/modemfleet.js', 'run', '--config', configFile], {
      reject: false,
      forceKillAfterDelay: 30_000,
      env: {
        MODEMFLEET_HOST_ID: 'embedded-host',
        MODEMFLEET_STATE_DIR: join(dir, 'state'),
        MODEMFLEET_PG_PORT: String(pgPort),
        MODEMFLEET_HTTP: '127.0.0.1:0',
        MODEMFLEET_API_TOKEN: TOKEN,
        ...(process.env['MF_DEBUG'] ? { MODEMFLEET_LOG_LEVEL: 'debug' } : {}),
      },
    });
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (process.env['MF_DEBUG']) appendFileSync('/tmp/mf-embedded-restart.log', d);
    });
    await until(() => /"inspector":"(http:\/\/127\.0\.0\.1:\d+)"/.test(out), 60_000, 'the inspector URL');
    url = /"inspector":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(out)?.[1] ?? '';
    await until(async () => (await onlineCount()) === N, 30_000, `${N} online`);

    for (let k = 0; k < KILLS; k++) {
      const pid = await postmasterPid();
      if (process.env['MF_DEBUG']) appendFileSync('/tmp/mf-embedded-restart.log', `TEST: kill ${pid}\n`);
      process.kill(pid, 'SIGKILL');
      await until(
        async () =>
          (await api('/ready')
            .then((r) => r.status)
            .catch(() => 0)) === 503,
        10_000,
        '/ready 503 during the outage',
      );
      // the daemon says it has started the server again (not only that something answers)
      await until(
        async () =>
          (out.match(/embedded PostgreSQL started again/g) ?? []).length === k + 1 &&
          (await api('/ready')).status === 200,
        30_000,
        'the server started again and /ready 200',
      );
      expect(child.exitCode).toBeNull();
    }

    // the farm serves as before: a rotation goes through
    const res = await fetch(`${url}/api/modems/${lab.modem(0).imei}/commands`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ kind: 'rotate' }),
    });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: number };
    // a rotation holds the radio off for detachMs; after three restarts on a loaded machine the
    // claim can also wait for the listen connection's rebuild (heartbeat timeout): be generous,
    // and say what the daemon did if it never finishes
    let command: { status: string } = { status: '' };
    let slowAnswers = 0;
    try {
      await until(
        async () => {
          // one answer slower than 5 s while the pool recovers is asked again, within the minute
          const r = await api(`/api/commands/${id}`).catch((err: unknown) => {
            if ((err as Error).name !== 'TimeoutError') throw err;
            slowAnswers++;
            return null;
          });
          if (r) command = (await r.json()) as { status: string };
          return command.status === 'done' || command.status === 'failed';
        },
        60_000,
        'rotation finished',
      );
    } catch (err) {
      throw new Error(
        `${(err as Error).message}; command ${JSON.stringify(command)}; ${slowAnswers} answers over 5 s; daemon log:\n${out.slice(-8000)}`,
        { cause: err },
      );
    }
    expect(command).toMatchObject({ status: 'done' });
    await until(async () => (await onlineCount()) === N, 20_000, `${N} online again`);

    const password = (await readFile(join(dir, 'state', 'postgres', 'password'), 'utf8')).trim();
    const sql = openSql(
      `postgres://modemfleet:${encodeURIComponent(password)}@127.0.0.1:${pgPort}/modemfleet`,
      { max: 1 },
    );
    try {
      expect(await journalHoles(sql)).toEqual([]);
      // raised while the server was down: stored once it is back (retried with backoff)
      let alerts: { message: string }[] = [];
      await until(
        async () => {
          alerts = await sql<{ message: string }[]>`
            select message from alerts where kind = 'database_restarted' order by raised_at`;
          return alerts.length >= KILLS;
        },
        15_000,
        'three database_restarted alerts',
      );
      expect(alerts).toHaveLength(KILLS);
      if (KILLS > 0)
        expect(alerts[0]?.message).toMatch(/embedded PostgreSQL killed by SIGKILL; started again/);
    } finally {
      await sql.end({ timeout: 1 });
    }

    child.kill('SIGTERM');
    const t = Date.now();
    expect((await child).exitCode).toBe(0);
    // bounded, not fast: a CI run on a loaded machine took 13.7 s (the journal's flush, the
    // embedded server's own shutdown); what matters is that it ends by itself
    expect(Date.now() - t).toBeLessThan(30_000);
    child = undefined;
    expect(await execa('pgrep', ['-f', join(dir, 'state', 'postgres')], { reject: false })).toMatchObject({
      stdout: '',
    });
  }, 180_000);
});
