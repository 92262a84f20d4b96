import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFarm, until, onlineCount, type TestFarm } from '../helpers/farm.js';

/**
 * The traffic and quota API over HTTP against a running inspector: bytes per step from what the
 * database holds, clear errors for bad input (nothing changed), the token scopes, and the modem's
 * reason while its port is closed.
 */

let farm: TestFarm;
let imeis: string[];

beforeAll(async () => {
  farm = await startFarm({ modems: 2, limits: { commandBurst: 100, commandRefillMs: 100 } });
  await until(async () => (await onlineCount(farm)) === 2, 30_000, '2 online');
  imeis = (await farm.store.modems()).map((m) => m.imei);
  const at = (iso: string) => new Date(iso);
  // 1.5 kB at 10:00-10:59, 3 kB at 11:xx, on two days
  await farm.store.recordTraffic([
    {
      imei: imeis[0]!,
      host: 'host-a',
      at: at('2026-03-15T10:01:00Z'),
      minute: at('2026-03-15T10:00:00Z'),
      instance: 'aaaa0001',
      download: 1_000,
      upload: 500,
    },
    {
      imei: imeis[0]!,
      host: 'host-a',
      at: at('2026-03-15T11:31:00Z'),
      minute: at('2026-03-15T11:30:00Z'),
      instance: 'aaaa0001',
      download: 3_000,
      upload: 1_500,
    },
    {
      imei: imeis[0]!,
      host: 'host-a',
      at: at('2026-03-16T00:00:30Z'),
      minute: at('2026-03-16T00:00:00Z'),
      instance: 'aaaa0001',
      download: 3_100,
      upload: 1_500,
    },
  ]);
});
afterAll(async () => {
  await farm?.stop();
});

const json = (body: unknown): RequestInit => ({
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json' },
});

describe('traffic over HTTP', () => {
  it('bytes per step, every step present, from the database', async () => {
    const res = await farm.api(
      `/api/modems/${imeis[0]}/traffic?from=2026-03-15T09:00:00Z&to=2026-03-15T12:00:00Z&step=1h`,
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual([
      { at: '2026-03-15T09:00:00.000Z', download: 0, upload: 0 },
      { at: '2026-03-15T10:00:00.000Z', download: 1_000, upload: 500 },
      { at: '2026-03-15T11:00:00.000Z', download: 2_000, upload: 1_000 },
    ]);
    const days = (await (
      await farm.api(`/api/modems/${imeis[0]}/traffic?from=2026-03-15&to=2026-03-17&step=1d`)
    ).json()) as { download: number }[];
    expect(days.map((d) => d.download)).toEqual([3_000, 100]);
    const minutes = (await (
      await farm.api(
        `/api/modems/${imeis[0]}/traffic?from=2026-03-15T10:00:00Z&to=2026-03-15T10:03:00%2B00:00&step=1m`,
      )
    ).json()) as unknown[];
    expect(minutes).toHaveLength(3);
  });

  it('bad input: 400 with what is wrong; an unknown modem: 404', async () => {
    const bad = async (query: string, code: string, message: RegExp) => {
      const res = await farm.api(`/api/modems/${imeis[0]}/traffic?${query}`);
      expect(res.status, query).toBe(400);
      expect(await res.json()).toMatchObject({
        error: code,
        message: expect.stringMatching(message) as unknown,
      });
    };
    await bad('step=5m', 'invalid_traffic_query', /step: must be one of 1m, 1h, 1d/);
    await bad('from=yesterday', 'invalid_traffic_query', /from: must be an ISO 8601 time/);
    await bad('from=2026-03-15T10:00:00', 'invalid_traffic_query', /with a zone/);
    await bad('from=2026-13-45', 'invalid_traffic_query', /from:/);
    await bad('from=2026-03-16&to=2026-03-15', 'invalid_traffic_query', /from: must be before to/);
    await bad('from=2020-01-01&to=2026-01-01&step=1h', 'invalid_request', /at most 5000/);
    await bad('since=2026-01-01', 'invalid_request', /must NOT have additional properties/);
    const unknown = await farm.api('/api/modems/999999999999999/traffic');
    expect(unknown.status).toBe(404);
  });
});

describe('quotas and expiry over HTTP', () => {
  it('set, shown with the modem, raised, reset, cleared; bad input changes nothing', async () => {
    const imei = imeis[1]!;
    const path = `/api/modems/${imei}/quota`;
    expect(await (await farm.api(path)).json()).toBeNull();
    const set = await farm.api(path, { method: 'PUT', ...json({ bytes: 10_000_000_000, period: 'month' }) });
    expect(set.status).toBe(200);
    const view = (await set.json()) as Record<string, unknown>;
    expect(view).toMatchObject({
      imei,
      bytes: 10_000_000_000,
      period: 'month',
      monthStartDay: 1,
      used: 0,
      closed: null,
    });
    expect(view['remaining']).toBe(10_000_000_000);
    for (const body of [
      { bytes: -1, period: 'month' },
      { bytes: 10, period: 'year' },
      { bytes: '10GB', period: 'day' },
      { bytes: 10, period: 'month', monthStartDay: 31 },
      { bytes: 10, period: 'day', monthStartDay: 2 },
      { period: 'day' },
    ]) {
      const res = await farm.api(path, { method: 'PUT', ...json(body) });
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toMatchObject({ error: 'invalid_quota' });
    }
    expect(await (await farm.api(path)).json()).toMatchObject({ bytes: 10_000_000_000, period: 'month' });
    const detail = (await (await farm.api(`/api/modems/${imei}`)).json()) as { quota: { bytes: number } };
    expect(detail.quota.bytes).toBe(10_000_000_000);
    expect((await farm.api(`${path}/reset`, { method: 'POST' })).status).toBe(200);
    expect((await farm.api(path, { method: 'DELETE' })).status).toBe(204);
    const again = await farm.api(path, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(await again.json()).toMatchObject({ error: 'no_quota' });
    expect((await farm.api(`${path}/reset`, { method: 'POST' })).status).toBe(404);
  });

  it('an expiry: set, refused when not a time, cleared', async () => {
    const path = `/api/modems/${imeis[1]}/expiry`;
    const set = await farm.api(path, { method: 'PUT', ...json({ at: '2030-01-31T00:00:00Z' }) });
    expect(set.status).toBe(200);
    expect(await set.json()).toMatchObject({ expiresAt: '2030-01-31T00:00:00.000Z' });
    for (const body of [{ at: 'tomorrow' }, { at: 5 }, {}, { at: '2030-01-31T00:00:00Z', x: 1 }]) {
      const res = await farm.api(path, { method: 'PUT', ...json(body) });
      expect(res.status, JSON.stringify(body)).toBe(400);
    }
    expect(await (await farm.api(`/api/modems/${imeis[1]}/quota`)).json()).toMatchObject({
      expiresAt: '2030-01-31T00:00:00.000Z',
    });
    expect((await farm.api(path, { method: 'DELETE' })).status).toBe(204);
    expect((await farm.api(path, { method: 'DELETE' })).status).toBe(404);
  });

  it("while its port is closed the modem's reason says why", async () => {
    const imei = imeis[1]!;
    await farm.store.setExpiry(imei, new Date('2020-01-01T00:00:00Z'), 'test');
    // what the owning host records when it closes the port (no data plane in this farm)
    await farm.store.markClosed(imei, 'expired');
    // the listing is the inspector's rows in memory: the quota row's notification has it re-read
    const listed = async () =>
      (
        (await (await farm.api('/api/modems')).json()) as {
          imei: string;
          state: string;
          reason: string | null;
        }[]
      ).find((m) => m.imei === imei);
    await until(async () => (await listed())?.reason === 'expired', 10_000, 'the reason listed');
    expect(await listed()).toMatchObject({ state: 'online', reason: 'expired' });
    // a filtered listing (read from the database) says the same, and finds it by the reason
    const found = (await (await farm.api('/api/modems?q=expired')).json()) as { imei: string }[];
    expect(found.map((m) => m.imei)).toEqual([imei]);
    await farm.store.clearExpiry(imei, 'test');
    await farm.store.markClosed(imei, null);
    await until(async () => (await listed())?.reason === null, 10_000, 'the reason gone');
    expect(await farm.store.quota(imei)).toBeNull();
  });

  it('scopes: read-only reads, never sets; a reseller only its own modems', async () => {
    const { token: ro } = await farm.store.createToken({
      name: 'noc-t',
      scope: 'read-only',
      createdBy: 'test',
    });
    const { token: rs } = await farm.store.createToken({
      name: 'shop-t',
      scope: 'reseller',
      modems: [imeis[0]!],
      createdBy: 'test',
    });
    const as = (token: string, path: string, init: RequestInit = {}) =>
      fetch(`${farm.url}${path}`, {
        ...init,
        headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` },
      });
    expect((await as(ro, `/api/modems/${imeis[0]}/traffic?step=1d`)).status).toBe(200);
    expect(
      (await as(ro, `/api/modems/${imeis[0]}/quota`, { method: 'PUT', ...json({ bytes: 1, period: 'day' }) }))
        .status,
    ).toBe(403);
    expect((await as(rs, `/api/modems/${imeis[0]}/traffic?step=1d`)).status).toBe(200);
    expect((await as(rs, `/api/modems/${imeis[1]}/traffic?step=1d`)).status).toBe(404);
    expect(
      (await as(rs, `/api/modems/${imeis[1]}/quota`, { method: 'PUT', ...json({ bytes: 1, period: 'day' }) }))
        .status,
    ).toBe(404);
    const own = await as(rs, `/api/modems/${imeis[0]}/quota`, {
      method: 'PUT',
      ...json({ bytes: 5_000, period: 'total' }),
    });
    expect(own.status).toBe(200);
    expect((await as(rs, `/api/modems/${imeis[0]}/quota`, { method: 'DELETE' })).status).toBe(204);
  });
});
