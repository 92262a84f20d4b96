import { stat, mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadApiToken } from '../../src/inspector/token.js';
import { startFarm, TOKEN, until, onlineCount, type TestFarm } from '../helpers/farm.js';

let farm: TestFarm;
let imeis: string[];

/**
 * deploy/'s Prometheus alert rules and Grafana dashboard against a real /metrics answer: promtool
 * (from Debian's prometheus package, unpacked by scripts/setup.sh) accepts the exposition and the rules, and every metric they name
 * is one the inspector serves (a renamed metric cannot leave a silent alert or an empty panel).
 */
const PROMTOOL = new URL('../../var/promtool/usr/bin/promtool', import.meta.url).pathname; // setup.sh

async function expectDeployFilesMatch(metrics: string): Promise<void> {
  const lint = await execa(PROMTOOL, ['check', 'metrics'], { input: metrics, reject: false });
  expect(lint.stdout + lint.stderr, 'promtool check metrics').toBe('');
  expect(lint.exitCode).toBe(0);
  const rulesFile = new URL('../../deploy/prometheus-rules.yml', import.meta.url).pathname;
  const rules = await execa(PROMTOOL, ['check', 'rules', rulesFile], { reject: false });
  expect(rules.exitCode, rules.stdout + rules.stderr).toBe(0);
  const dashboard = JSON.parse(
    await readFile(new URL('../../deploy/grafana-dashboard.json', import.meta.url), 'utf8'),
  ) as {
    uid: string;
    schemaVersion: number;
    panels: { id: number; title: string; targets: { expr: string }[] }[];
  };
  expect(dashboard).toMatchObject({ uid: 'modemfleet', schemaVersion: expect.any(Number) as unknown });
  expect(new Set(dashboard.panels.map((p) => p.id)).size).toBe(dashboard.panels.length);
  for (const panel of dashboard.panels) {
    expect(panel.title.length).toBeGreaterThan(0);
    expect(panel.targets.length).toBeGreaterThan(0);
  }
  const served = new Set(
    [...metrics.matchAll(/^([a-z_:][a-z0-9_:]*?)(_bucket|_sum|_count)?(\{| )/gm)].flatMap((m) => [
      m[1] ?? '',
      `${m[1] ?? ''}${m[2] ?? ''}`,
    ]),
  );
  const exprs = [
    ...dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr)),
    ...[...(await readFile(rulesFile, 'utf8')).matchAll(/expr: (.*)$/gm)].map((m) => m[1] ?? ''),
  ];
  const named = new Set(
    exprs.flatMap((e) =>
      [...e.matchAll(/\b((?:modemfleet|process|nodejs)_[a-z0-9_]+)/g)].map((m) => m[1] ?? ''),
    ),
  );
  expect(named.size).toBeGreaterThan(10);
  expect([...named].filter((name) => !served.has(name))).toEqual([]);
}

beforeAll(async () => {
  farm = await startFarm({ modems: 4, limits: { commandBurst: 3, commandRefillMs: 60_000 } });
  await until(async () => (await onlineCount(farm)) === 4, 30_000, '4 online');
  // ports are allocated once the IMEI is confirmed, a moment after the modem may be online
  await until(async () => (await farm.store.modems()).every((m) => m.proxy !== null), 10_000, 'allocations');
  imeis = (await farm.store.modems()).map((m) => m.imei);
});
afterAll(async () => {
  await farm?.stop();
});

const json = async (res: Response) => ({
  status: res.status,
  body: (await res.json()) as Record<string, unknown>,
});

describe('inspector HTTP API against a running supervisor', () => {
  it('lists the modems with state, address and proxy endpoint', async () => {
    const res = await farm.api('/api/modems');
    expect(res.status).toBe(200);
    const modems = (await res.json()) as {
      imei: string;
      state: string;
      wanIp: string;
      proxy: { host: string; httpPort: number; socksPort: number; username: string; password: string };
    }[];
    expect(modems).toHaveLength(4);
    for (const m of modems) {
      expect(m.state).toBe('online');
      expect(m.wanIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      expect(m.proxy).toMatchObject({ host: '127.0.0.1' });
      expect(m.proxy.username).toMatch(/^[a-z0-9]{4,32}$/);
      expect(m.proxy.password.length).toBeGreaterThanOrEqual(12);
    }
    expect(new Set(modems.map((m) => m.proxy.socksPort)).size).toBe(4);
    const filtered = (await (await farm.api('/api/modems?state=error')).json()) as unknown[];
    expect(filtered).toEqual([]);
  });

  it('shows one modem with its history, health and commands; pages transitions', async () => {
    const imei = imeis[0] ?? '';
    const { status, body } = await json(await farm.api(`/api/modems/${imei}`));
    expect(status).toBe(200);
    expect(body).toMatchObject({ imei, state: 'online', lastError: null, rotationLink: null });
    const all = (await (await farm.api(`/api/modems/${imei}/transitions?limit=1000`)).json()) as {
      seq: number;
    }[];
    expect(all.length).toBe(body['seq']);
    const page = (await (await farm.api(`/api/modems/${imei}/transitions?before=4&limit=2`)).json()) as {
      seq: number;
    }[];
    expect(page.map((t) => t.seq)).toEqual([3, 2]);
    await until(
      async () => ((await (await farm.api(`/api/modems/${imei}/health`)).json()) as unknown[]).length > 0,
      10_000,
      'a health sample',
    );
    const future = await farm.api(
      `/api/modems/${imei}/health?since=${new Date(Date.now() + 60_000).toISOString()}`,
    );
    expect(await future.json()).toEqual([]);
    // no egress guard here: no public address seen, no statistics but zeros; an unknown modem is 404
    expect(await (await farm.api(`/api/modems/${imei}/addresses`)).json()).toEqual([]);
    const empty = { rotations: 0, distinctAddresses: 0, distinctNetworks: 0, reuseRate: null };
    expect(await (await farm.api(`/api/modems/${imei}/addresses/stats`)).json()).toEqual({
      '24h': empty,
      '7d': empty,
    });
    expect((await farm.api('/api/modems/356000000000099/addresses/stats')).status).toBe(404);
    const farmStats = (await (await farm.api('/api/addresses/stats')).json()) as Record<string, unknown>;
    expect(Object.keys(farmStats).sort()).toEqual(['24h', '7d']);
    // uptime from the journal: this modem came online within the window and stayed
    const uptime = (await (await farm.api(`/api/modems/${imei}/uptime`)).json()) as Record<
      string,
      { ratio: number | null; onlineSeconds: number; wantedSeconds: number }
    >;
    expect(Object.keys(uptime).sort()).toEqual(['24h', '30d', '7d']);
    expect(uptime['24h']!.wantedSeconds).toBeGreaterThan(0);
    expect(uptime['24h']!.ratio).toBeGreaterThan(0);
    expect(uptime['24h']!.ratio).toBeLessThanOrEqual(1);
    expect((await farm.api('/api/modems/356000000000099/uptime')).status).toBe(404);
    expect(Object.keys((await (await farm.api('/api/uptime')).json()) as object).sort()).toEqual([
      '24h',
      '30d',
      '7d',
    ]);
  });

  it('runs a command from POST to done, visible at /api/commands/:id', async () => {
    const imei = imeis[1] ?? '';
    const { status, body } = await json(
      await farm.api(`/api/modems/${imei}/commands`, {
        method: 'POST',
        body: JSON.stringify({ kind: 'rotate' }),
      }),
    );
    expect(status).toBe(202);
    expect(body).toMatchObject({ imei, kind: 'rotate', status: 'pending' });
    const id = body['id'] as number;
    await until(
      async () =>
        ['done', 'failed'].includes(
          ((await (await farm.api(`/api/commands/${id}`)).json()) as { status: string }).status,
        ),
      20_000,
      'the rotation to finish',
    );
    const done = (await (await farm.api(`/api/commands/${id}`)).json()) as {
      status: string;
      result: { wanIp?: string };
    };
    expect(done.status).toBe('done');
    expect(done.result.wanIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const recent = (await (await farm.api(`/api/modems/${imei}/commands`)).json()) as { id: number }[];
    expect(recent[0]?.id).toBe(id);
  });

  it('refuses bad input with a clear 4xx and changes nothing', async () => {
    const imei = imeis[2] ?? '';
    const before = await farm.db.sql`select count(*)::int as n from modem_commands`;
    const post = (path: string, body: string, headers: Record<string, string> = {}) =>
      farm.api(path, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });

    expect(await json(await post(`/api/modems/${imei}/commands`, '{"kind": rot'))).toMatchObject({
      status: 400,
      body: { error: 'invalid_json' },
    });
    const unknownKind = await json(await post(`/api/modems/${imei}/commands`, '{"kind":"explode"}'));
    expect(unknownKind).toMatchObject({ status: 400, body: { error: 'invalid_command' } });
    expect(unknownKind.body['message']).toContain('rotate, reset, disable, enable');
    expect(
      await json(await post(`/api/modems/${imei}/commands`, '{"kind":"rotate","extra":1}')),
    ).toMatchObject({
      status: 400,
      body: { error: 'invalid_request' },
    });
    expect(await json(await post(`/api/modems/${imei}/commands`, '[]'))).toMatchObject({ status: 400 });
    expect(await json(await post('/api/modems/000000000000000/commands', '{"kind":"rotate"}'))).toMatchObject(
      {
        status: 404,
        body: { error: 'unknown_modem' },
      },
    );
    expect(await json(await post('/api/modems/12345/commands', '{"kind":"rotate"}'))).toMatchObject({
      status: 400,
      body: { error: 'invalid_request' },
    });
    expect(
      await json(await post(`/api/modems/${imei}/commands`, JSON.stringify({ kind: 'x'.repeat(20_000) }))),
    ).toMatchObject({
      status: 413,
      body: { error: 'body_too_large' },
    });
    expect(
      await json(await post(`/api/modems/${imei}/commands`, 'kind=rotate', { 'content-type': 'text/plain' })),
    ).toMatchObject({ status: 415 });
    expect(await json(await farm.api('/api/modems/000000000000000'))).toMatchObject({ status: 404 });
    expect(await json(await farm.api('/api/modems/000000000000000/transitions'))).toMatchObject({
      status: 404,
    });
    expect(await json(await farm.api(`/api/modems/${imei}/transitions?limit=0`))).toMatchObject({
      status: 400,
    });
    expect(await json(await farm.api(`/api/modems/${imei}/transitions?before=abc`))).toMatchObject({
      status: 400,
    });
    expect(await json(await farm.api(`/api/modems/${imei}/health?since=yesterday`))).toMatchObject({
      status: 400,
    });
    expect(await json(await farm.api('/api/nothing'))).toMatchObject({
      status: 404,
      body: { error: 'not_found' },
    });
    expect(await json(await farm.api('/api/commands/99999999'))).toMatchObject({ status: 404 });

    const after = await farm.db.sql`select count(*)::int as n from modem_commands`;
    expect(after[0]?.['n']).toBe(before[0]?.['n']);
  });

  it('wants the token everywhere but health, metrics, the page and rotation links (401)', async () => {
    const bare = (path: string, headers: Record<string, string> = {}) =>
      fetch(`${farm.url}${path}`, { headers });
    for (const path of ['/api/modems', `/api/modems/${imeis[0]}`, '/api/alerts']) {
      const missing = await bare(path);
      expect(missing.status).toBe(401);
      expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer/);
      expect((await bare(path, { authorization: 'Bearer wrong-token-0123456789' })).status).toBe(401);
      expect((await bare(path, { authorization: `Basic ${TOKEN}` })).status).toBe(401);
      expect((await bare(path, { authorization: `Bearer ${TOKEN}x` })).status).toBe(401);
    }
    const post = await fetch(`${farm.url}/api/modems/${imeis[0]}/commands`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"kind":"reset"}',
    });
    expect(post.status).toBe(401);
    for (const path of ['/live', '/ready', '/health', '/metrics', '/', '/app.js', '/style.css'])
      expect((await bare(path)).status, path).toBe(200);
  });

  it('rate-limits commands per modem (429 with Retry-After), other modems unaffected', async () => {
    const imei = imeis[3] ?? '';
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 5; i++) {
      const res = await farm.api(`/api/modems/${imei}/commands`, {
        method: 'POST',
        body: '{"kind":"enable"}',
      });
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
    }
    expect(statuses).toEqual([202, 202, 202, 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThan(0);
    const other = await farm.api(`/api/modems/${imeis[2]}/commands`, {
      method: 'POST',
      body: '{"kind":"enable"}',
    });
    expect(other.status).toBe(202);
  });

  it('rotation links: created with the token, used without it, revoked at once', async () => {
    const imei = imeis[2] ?? '';
    const created = await json(await farm.api(`/api/modems/${imei}/rotation-link`, { method: 'POST' }));
    expect(created.status).toBe(201);
    const path = created.body['path'] as string;
    expect(path).toMatch(/^\/rotate\/[A-Za-z0-9_-]{43}$/);
    const stored = await farm.db.sql`select secret_hash from rotation_links where imei = ${imei}`;
    expect(String(stored[0]?.['secret_hash'])).not.toContain(path.slice(8));

    const used = await fetch(`${farm.url}${path}?wait=30`);
    expect(used.status).toBe(200);
    const result = (await used.json()) as { status: string; result: { wanIp?: string } };
    expect(result.status).toBe('done');
    expect(result.result.wanIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const link = (await json(await farm.api(`/api/modems/${imei}`))).body['rotationLink'] as {
      createdBy: string;
    };
    expect(link.createdBy).toMatch(/^api:/);

    // a new link replaces the old one; revoking stops it
    const second = (await json(await farm.api(`/api/modems/${imei}/rotation-link`, { method: 'POST' }))).body;
    expect((await fetch(`${farm.url}${path}`)).status).toBe(404);
    expect((await farm.api(`/api/modems/${imei}/rotation-link`, { method: 'DELETE' })).status).toBe(204);
    expect((await fetch(`${farm.url}${second['path'] as string}`)).status).toBe(404);
    expect((await farm.api(`/api/modems/${imei}/rotation-link`, { method: 'DELETE' })).status).toBe(404);
    expect((await fetch(`${farm.url}/rotate/not-a-secret`)).status).toBe(404);
    expect((await farm.api('/api/modems/000000000000000/rotation-link', { method: 'POST' })).status).toBe(
      404,
    );
  });

  it('health, readiness and Prometheus metrics; /ready reports a database outage and recovers', async () => {
    const ready = await json(await fetch(`${farm.url}/ready`));
    expect(ready).toMatchObject({ status: 200, body: { ready: true } });
    const health = await json(await fetch(`${farm.url}/health`));
    expect(health.body).toMatchObject({ status: 'ok', modems: { online: 4 } });
    const metrics = await (await fetch(`${farm.url}/metrics`)).text();
    expect(metrics).toMatch(/^modemfleet_modems\{host="host-a",state="online"\} 4$/m);
    expect(metrics).toMatch(/^modemfleet_transitions_total \d+$/m);
    expect(metrics).toMatch(/^modemfleet_command_duration_seconds_bucket\{le="\+Inf"\} [1-9]\d*$/m);
    expect(metrics).toMatch(/^modemfleet_listen_reconnects_total\{listener="inspector"\} \d+$/m);
    expect(metrics).toMatch(/^modemfleet_proxy_restarts_total 0$/m);
    expect(metrics).toMatch(/^modemfleet_egress_checks_total\{result="failed"\} 0$/m);
    // the farm's uptime by window (its modems came online in this test run: between 0 and 1)
    expect(metrics).toMatch(/^modemfleet_uptime_ratio\{window="24h"\} (0(\.\d+)?|1)$/m);
    expect(metrics).toMatch(/^modemfleet_rotations_total\{result="done"\} \d+$/m);
    // per modem (IMEI and host labels, never an address): up, and its signal
    for (const imei of imeis)
      expect(metrics).toMatch(
        new RegExp(`^modemfleet_modem_online\\{imei="${imei}",host="host-a"\\} 1$`, 'm'),
      );
    expect(metrics).toMatch(/^modemfleet_modem_rssi_dbm\{imei="\d{15}",host="host-a"\} -\d+$/m);
    expect(metrics).toMatch(/^modemfleet_alerts_raised_total \d+$/m);
    // the farm's address counts, never an address in a label
    expect(metrics).toMatch(/^modemfleet_rotations_24h \d+$/m);
    expect(metrics).toMatch(/^modemfleet_public_addresses_24h 0$/m);
    expect(metrics).toMatch(/^modemfleet_public_networks_24h 0$/m);
    expect(metrics).not.toMatch(/\d+\.\d+\.\d+\.\d+"/);
    expect(metrics).toMatch(/^modemfleet_spool_bytes \d+$/m);
    // prom-client's Node metrics beside ours (the dashboard's memory and CPU panels read them)
    expect(metrics).toMatch(/^# TYPE process_cpu_seconds_total counter$/m);
    expect(metrics).toMatch(/^process_resident_memory_bytes [1-9]\d*$/m);
    expect(metrics).toMatch(/^process_heap_used_bytes [1-9]\d*$/m);
    expect(metrics).toMatch(/^nodejs_eventloop_lag_p99_seconds \d/m);
    expect(metrics).toMatch(/^# TYPE nodejs_gc_duration_seconds histogram$/m);
    await expectDeployFilesMatch(metrics);

    farm.dbProxy.cut();
    await until(async () => (await fetch(`${farm.url}/ready`)).status === 503, 10_000, '/ready to fail');
    const down = await json(await fetch(`${farm.url}/ready`));
    expect(down.body).toMatchObject({ ready: false, checks: { database: { ok: false } } });
    expect((await fetch(`${farm.url}/live`)).status).toBe(200);
    // /metrics is rendered at most once per 1.5 s: the outage shows in the next render
    let outage = '';
    await until(
      async () => {
        outage = await (await fetch(`${farm.url}/metrics`)).text();
        return /^modemfleet_database_up 0$/m.test(outage);
      },
      5_000,
      '/metrics to show the outage',
    );
    // what the database would say is left out, not reported as 0; the process's own counters stay
    expect(outage).not.toMatch(/^modemfleet_(rotations_24h|public_addresses_24h|modems|modem_online)[ {]/m);
    expect(outage).toMatch(/^modemfleet_transitions_total \d+$/m);
    const lint = await execa(PROMTOOL, ['check', 'metrics'], { input: outage, reject: false });
    expect(lint.stdout + lint.stderr).toBe('');
    const during = await farm.api('/api/modems');
    expect(during.status).toBe(503);
    farm.dbProxy.up();
    await until(async () => (await fetch(`${farm.url}/ready`)).status === 200, 20_000, '/ready to recover');
  });
});

describe('modemfleet status next to the API', () => {
  it('status --json and the table agree with GET /api/modems', async () => {
    type Row = {
      imei: string;
      state: string;
      wanIp: string | null;
      publicIp: string | null;
      httpPort: number;
      socksPort: number;
    };
    const pick = (rows: Row[]) =>
      rows.map(({ imei, state, wanIp, publicIp, httpPort, socksPort }) => ({
        imei,
        state,
        wanIp,
        publicIp,
        httpPort,
        socksPort,
      }));
    const env = { DATABASE_URL: farm.db.url, MODEMFLEET_HOST_ID: 'host-a', MODEMFLEET_STATE_DIR: farm.dir };
    const api = (await (await farm.api('/api/modems')).json()) as Row[];
    const json = await execa('node', ['bin/modemfleet.js', 'status', '--json'], { env });
    expect(pick(JSON.parse(json.stdout) as Row[])).toEqual(pick(api));
    const table = await execa('node', ['bin/modemfleet.js', 'status'], { env });
    const lines = table.stdout.split('\n');
    expect(lines[0]).toMatch(
      /^IMEI\s+STATE\s+FOR\s+PUBLIC\s+ADDRESS\s+HTTP\s+SOCKS\s+OPERATOR\s+SIGNAL\s+TODAY\s+MONTH$/,
    );
    for (const m of api) {
      const line = lines.find((l) => l.startsWith(m.imei)) ?? '';
      const cells = line.split(/\s+/);
      expect(cells[1]?.split('.')[0]).toBe(m.state);
      expect(cells.slice(3, 7)).toEqual([
        m.publicIp ?? '-',
        m.wanIp ?? '-',
        String(m.httpPort),
        String(m.socksPort),
      ]);
    }
  });
});

describe('API token', () => {
  it('is generated once into the state dir with mode 0600, then reused; a bad env token is refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mf-token-'));
    try {
      const first = await loadApiToken(dir, undefined);
      expect(first.source).toBe('generated');
      expect((await stat(join(dir, 'api-token'))).mode & 0o777).toBe(0o600);
      expect((await readFile(join(dir, 'api-token'), 'utf8')).trim()).toBe(first.token);
      const second = await loadApiToken(dir, undefined);
      expect(second).toMatchObject({ source: 'file', token: first.token });
      expect((await loadApiToken(dir, 'from-the-environment-123')).source).toBe('env');
      await expect(loadApiToken(dir, 'short')).rejects.toThrow(/MODEMFLEET_API_TOKEN/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('hostile requests', () => {
  it('fuzzed method, path, query, headers and body: never a 5xx, always JSON errors; the server keeps serving', async () => {
    const segment = fc.oneof(
      fc.constantFrom(
        'api',
        'modems',
        'commands',
        'transitions',
        'health',
        'alerts',
        'rotation-link',
        'rotate',
      ),
      fc.constantFrom(imeis[0] ?? '', '000000000000000', '12345', '%00', '..', '%2e%2e', 'x'.repeat(300)),
      fc.string({ maxLength: 20 }).map((x) => encodeURIComponent(x)),
    );
    const request = fc.record({
      method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'PATCH'),
      path: fc.array(segment, { minLength: 1, maxLength: 5 }).map((parts) => `/${parts.join('/')}`),
      query: fc.option(
        fc.dictionary(
          fc.constantFrom('limit', 'before', 'since', 'state', 'open', 'wait', 'x'),
          fc.string({ maxLength: 30 }),
        ),
        { nil: undefined },
      ),
      body: fc.option(
        fc.oneof(
          fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
          fc.string({ maxLength: 200 }),
          fc.constant('{"kind":'),
        ),
        { nil: undefined },
      ),
      contentType: fc.constantFrom('application/json', 'text/plain', 'application/x-www-form-urlencoded', ''),
      auth: fc.constantFrom(`Bearer ${TOKEN}`, 'Bearer nope', '', `bearer ${TOKEN}`),
    });
    await fc.assert(
      fc.asyncProperty(request, async (r) => {
        const url = `${farm.url}${r.path}${r.query ? `?${new URLSearchParams(r.query).toString()}` : ''}`;
        const withBody = r.body !== undefined && r.method !== 'GET';
        const res = await fetch(url, {
          method: r.method,
          headers: {
            ...(r.auth ? { authorization: r.auth } : {}),
            ...(withBody && r.contentType ? { 'content-type': r.contentType } : {}),
          },
          ...(withBody ? { body: r.body } : {}),
        });
        const text = await res.text();
        expect(res.status, `${r.method} ${url} → ${text.slice(0, 200)}`).toBeLessThan(500);
        if (res.status >= 400) expect(JSON.parse(text)).toHaveProperty('error');
      }),
      { numRuns: 300 },
    );
    expect((await fetch(`${farm.url}/live`)).status).toBe(200);
    expect((await farm.api('/api/modems')).status).toBe(200);
  }, 60_000);
});
