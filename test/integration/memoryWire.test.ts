import { afterEach, describe, expect, it } from 'vitest';
import { startFarm, type FarmHandle } from '../../bench/fleet.js';
import { sleep } from '../../src/util/time.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

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
    const until = async (want: string[], what: string) => {
      const end = Date.now() + 15_000;
      while (JSON.stringify(await states()) !== JSON.stringify(want)) {
        if (Date.now() > end)
          throw new Error(`timed out waiting for ${what}: ${JSON.stringify(await states())}`);
        await sleep(50);
      }
    };
    await until(['online', 'online', 'online'], '3 online');
    const imei = farm.lab.modem(1).imei;
    const before = (await farm.store.modems({ imei }))[0]?.wanIp;
    const id = await farm.store.insertCommand(imei, 'rotate', 'test');
    const end = Date.now() + 15_000;
    while ((await farm.store.command(id))?.status !== 'done') {
      if (Date.now() > end) throw new Error('rotation did not finish');
      await sleep(50);
    }
    const result = (await farm.store.command(id))?.result as { wanIp?: string } | undefined;
    expect(result?.wanIp).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    expect(result?.wanIp).not.toBe(before);
    await farm.lab.unplug(0);
    await until(['online', 'online', 'removed'], 'one removed');
  });
});
