import { afterEach, describe, expect, it } from 'vitest';
import { startFarm, type FarmHandle } from '../../bench/fleet.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { until } from '../helpers/until.js';

/** The benchmarks' in-process simulated modems: the same supervisor, without PTYs. */

let db: TestDatabase | undefined;
let farm: FarmHandle | undefined;

afterEach(async () => {
  await farm?.stop();
  await db?.drop();
  farm = undefined;
  db = undefined;
});

describe('in-process simulated modems', () => {
  it('come online through the supervisor, go away on unplug, and answer a rotation', async () => {
    db = await createTestDatabase();
    farm = await startFarm(db.sql, db.url, 3);
    await farm.lab.start();
    await farm.supervisor.start();
    const states = async () => (await farm?.store.modems())?.map((m) => m.state).sort() ?? [];
    const statesAre = (want: string[], what: string) =>
      until(async () => JSON.stringify(await states()) === JSON.stringify(want), {
        timeoutMs: 15_000,
        message: async () => `${what}: ${JSON.stringify(await states())}`,
      });
    await statesAre(['online', 'online', 'online'], '3 online');
    const imei = farm.lab.modem(1).imei;
    const before = (await farm.store.modems({ imei }))[0]?.wanIp;
    const id = await farm.store.insertCommand(imei, 'rotate', 'test');
    await until(async () => (await farm?.store.command(id))?.status === 'done', {
      timeoutMs: 15_000,
      message: 'the rotation to finish',
    });
    const result = (await farm.store.command(id))?.result as { wanIp?: string } | undefined;
    expect(result?.wanIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(result?.wanIp).not.toBe(before);
    await farm.lab.unplug(0);
    await statesAre(['online', 'online', 'removed'], 'one removed');
  });
});
