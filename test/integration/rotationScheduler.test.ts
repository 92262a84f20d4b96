import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFarm, until, onlineCount, runCommand, type TestFarm } from '../helpers/farm.js';

/**
 * Scheduled rotation against a running supervisor over simulated EC25s: the policy's floor is
 * lowered to 1 s so a schedule of a few seconds runs in the test; rotations of one modem are at
 * least 2 s apart (rotationMinIntervalMs).
 */
let farm: TestFarm;
let imeis: string[];
const MIN_INTERVAL_MS = 2_000;

beforeAll(async () => {
  farm = await startFarm({
    modems: 2,
    limits: { commandBurst: 50, commandRefillMs: 100 },
    policy: {
      rotationScheduleMinSeconds: 1,
      rotationSchedulePollMs: 200,
      rotationMinIntervalMs: MIN_INTERVAL_MS,
    },
  });
  await until(async () => (await onlineCount(farm)) === 2, 30_000, '2 online');
  imeis = (await farm.store.modems()).map((m) => m.imei).sort();
});
afterAll(async () => {
  await farm?.stop();
});

const put = (imei: string, body: unknown) =>
  farm.api(`/api/modems/${imei}/schedule`, { method: 'PUT', body: JSON.stringify(body) });

interface Row {
  id: number;
  status: string;
  requested_by: string;
  claimed_at: Date | null;
  finished_at: Date | null;
}
const rotations = (imei: string) =>
  farm.db.sql<Row[]>`
    select id, status, requested_by, claimed_at, finished_at from modem_commands
    where imei = ${imei} and kind = 'rotate' order by id`;

describe('rotation schedules', () => {
  it('PUT and DELETE /api/modems/:imei/schedule; bad input is refused and nothing is stored', async () => {
    const imei = imeis[0] ?? '';
    const refused: [unknown, RegExp][] = [
      [{ intervalSeconds: 0 }, /intervalSeconds: must be a whole number of seconds from 1 to 2592000/],
      [{ intervalSeconds: '60' }, /intervalSeconds: must be a whole number/],
      [{ intervalSeconds: 60, jitterSeconds: 60 }, /jitterSeconds: must be less than intervalSeconds/],
      [
        { intervalSeconds: 60, jitterSeconds: -1 },
        /jitterSeconds: must be a whole number of seconds, 0 or more/,
      ],
      [{ intervalSeconds: 60.5 }, /intervalSeconds/],
      [{ interval: 60 }, /interval: unknown setting/],
      [{ off: false }, /off: must be \{ "off": true \} alone/],
      [{ off: true, intervalSeconds: 60 }, /off: must be \{ "off": true \} alone/],
    ];
    for (const [body, message] of refused) {
      const res = await put(imei, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(await res.json()).toMatchObject({
        error: 'invalid_schedule',
        message: expect.stringMatching(message) as unknown,
      });
    }
    expect((await put(imei, [60])).status).toBe(400);
    const unknown = await put('356999999999999', { intervalSeconds: 60 });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: 'unknown_modem' });
    expect((await farm.api('/api/modems/1234/schedule', { method: 'DELETE' })).status).toBe(400);
    expect((await farm.db.sql`select 1 from rotation_schedules`).length).toBe(0);

    expect(await (await farm.api(`/api/modems/${imei}`)).json()).toMatchObject({ schedule: null });
    const ok = await put(imei, { intervalSeconds: 3_600, jitterSeconds: 60 });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ imei, schedule: { intervalSeconds: 3_600, jitterSeconds: 60 } });
    expect(await (await farm.api(`/api/modems/${imei}`)).json()).toMatchObject({
      schedule: {
        intervalSeconds: 3_600,
        jitterSeconds: 60,
        updatedBy: expect.stringMatching(/^api:/) as unknown,
      },
    });
    // off: no scheduled rotation even under a farm default (the scheduler sees it as off)
    const off = await put(imei, { off: true });
    expect(off.status).toBe(200);
    expect(await off.json()).toMatchObject({ imei, schedule: { off: true, intervalSeconds: null } });
    const facts = (await farm.store.scheduleFacts(true)).facts;
    expect(facts.find((f) => f.imei === imei)?.own).toBe('off');
    expect(facts.find((f) => f.imei === imeis[1])?.own).toBeNull();
    // without a farm default an off modem is not even read
    expect((await farm.store.scheduleFacts(false)).facts.map((f) => f.imei)).not.toContain(imei);
    expect((await farm.api(`/api/modems/${imei}/schedule`, { method: 'DELETE' })).status).toBe(204);
    expect(await (await farm.api(`/api/modems/${imei}`)).json()).toMatchObject({ schedule: null });
    const again = await farm.api(`/api/modems/${imei}/schedule`, { method: 'DELETE' });
    expect(again.status).toBe(404);
    expect(await again.json()).toMatchObject({ error: 'unknown_schedule' });
  });

  it('a schedule of a few seconds rotates the modem on time, through the command queue, until removed', async () => {
    const imei = imeis[1] ?? '';
    const since = Date.now();
    expect((await put(imei, { intervalSeconds: 3, jitterSeconds: 1 })).status).toBe(200);
    const scheduled = async () => (await rotations(imei)).filter((r) => r.requested_by === 'schedule');
    await until(
      async () => (await scheduled()).filter((r) => r.status === 'done').length >= 3,
      40_000,
      'three scheduled rotations done',
    );
    expect((await farm.api(`/api/modems/${imei}/schedule`, { method: 'DELETE' })).status).toBe(204);
    const done = (await scheduled()).slice(0, 3);
    expect(done.map((r) => r.status)).toEqual(['done', 'done', 'done']);
    // never early: the first 2-4 s after the schedule started, each next 2-4 s after the last finished
    const claimed = done.map((r) => r.claimed_at?.getTime() ?? 0);
    const finished = done.map((r) => r.finished_at?.getTime() ?? 0);
    expect(claimed[0]).toBeGreaterThanOrEqual(since + 2_000 - 500);
    for (let i = 1; i < 3; i++) {
      expect(claimed[i] ?? 0).toBeGreaterThanOrEqual((finished[i - 1] ?? 0) + 2_000 - 50);
      expect(claimed[i] ?? 0).toBeLessThan((finished[i - 1] ?? 0) + 4_000 + 2_000);
    }
    // removed: no more scheduled rotations (the modem is online and idle)
    await until(
      async () =>
        !(
          await farm.db.sql`
      select 1 from modem_commands where imei = ${imei} and status in ('pending', 'running')`
        ).length,
      10_000,
    );
    const count = (await scheduled()).length;
    await new Promise((r) => setTimeout(r, 5_000));
    expect((await scheduled()).length).toBe(count);
    expect((await farm.store.modems({ imei }))[0]?.state).toBe('online');
  });

  it('a second rotate while one is pending gets the pending one; an early rotate waits for the minimum interval, operator commands do not', async () => {
    const imei = imeis[0] ?? '';
    const first = await runCommand(farm, imei, 'rotate');
    expect(first.status).toBe('done');
    // right after a rotation: the next one waits, so it is pending when asked for again
    const post = async () =>
      (await (
        await farm.api(`/api/modems/${imei}/commands`, {
          method: 'POST',
          body: JSON.stringify({ kind: 'rotate' }),
        })
      ).json()) as { id: number };
    const a = await post();
    const b = await post();
    const c = await farm.store.insertCommand(imei, 'rotate', 'test');
    expect(b.id).toBe(a.id);
    expect(c).toBe(a.id);
    expect((await farm.store.command(a.id))?.status).toBe('pending');
    // another kind is queued as before, and goes first: the held rotate does not hold it back
    const reset = await farm.store.insertCommand(imei, 'reset', 'test');
    expect(reset).not.toBe(a.id);
    await until(async () => (await farm.store.command(reset))?.status === 'done', 30_000, 'the reset');
    await until(
      async () => ['done', 'failed'].includes((await farm.store.command(a.id))?.status ?? ''),
      30_000,
      'the early rotate finished',
    );
    const [resetRow] = await farm.db.sql<{ claimed_at: Date; finished_at: Date }[]>`
      select claimed_at, finished_at from modem_commands where id = ${reset}`;
    const rows = await rotations(imei);
    const early = rows.find((r) => r.id === a.id);
    const previous = rows.find((r) => r.id === first.id);
    // claimed once the modem was online again after the reset, not failed as not_online
    expect(early?.status).toBe('done');
    const earlyClaimed = early?.claimed_at?.getTime() ?? 0;
    // the reset ran while the rotate waited for the minimum interval, not after it
    expect(resetRow?.claimed_at.getTime() ?? Infinity).toBeLessThan(
      (previous?.finished_at?.getTime() ?? 0) + MIN_INTERVAL_MS,
    );
    expect(earlyClaimed).toBeGreaterThanOrEqual(resetRow?.finished_at.getTime() ?? Infinity);
    expect(earlyClaimed).toBeGreaterThanOrEqual(
      (previous?.finished_at?.getTime() ?? 0) + MIN_INTERVAL_MS - 50,
    );
    // and not much later: when the interval is over and the modem is back online after the reset
    const [back] = await farm.db.sql<{ at: Date }[]>`
      select at from modem_transitions where imei = ${imei} and to_state like 'online%'
        and at > ${resetRow?.finished_at ?? new Date(0)} order by seq limit 1`;
    expect(earlyClaimed).toBeLessThan(
      Math.max((previous?.finished_at?.getTime() ?? 0) + MIN_INTERVAL_MS, back?.at.getTime() ?? Infinity) +
        1_500,
    );
    await until(async () => (await onlineCount(farm)) === 2, 30_000, '2 online again');
  });

  it('a scheduled rotation of a modem that is not online is skipped and recorded', async () => {
    const imei = imeis[0] ?? '';
    expect((await runCommand(farm, imei, 'disable')).status).toBe('done');
    await until(async () => (await farm.store.modems({ imei }))[0]?.state === 'disabled', 10_000, 'disabled');
    expect((await put(imei, { intervalSeconds: 2, jitterSeconds: 0 })).status).toBe(200);
    const skipped = await until(
      async () =>
        (
          await farm.db.sql<{ id: number; status: string; result: unknown; claimed_at: Date | null }[]>`
          select id, status, result, claimed_at from modem_commands
          where imei = ${imei} and kind = 'rotate' and requested_by = 'schedule'`
        )[0],
      10_000,
      'a skipped rotation',
    );
    expect(skipped).toMatchObject({
      status: 'failed',
      claimed_at: null,
      result: { error: 'not_online', message: expect.stringMatching(/disabled/) as unknown },
    });
    expect((await farm.api(`/api/modems/${imei}/schedule`, { method: 'DELETE' })).status).toBe(204);
    expect((await runCommand(farm, imei, 'enable')).status).toBe('done');
  });
});
