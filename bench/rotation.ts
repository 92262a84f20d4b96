import { createServer, type Server } from 'node:http';
import { mkdtemp, rm, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sql } from '../src/store/database.js';
import { findProgram } from '../src/util/fs.js';
import { sleep } from '../src/util/time.js';
import { startFarm } from './fleet.js';

/**
 * Rotation: a rotate command inserted → `done`, which (with the egress guard configured) means a
 * request through the modem's own SOCKS port showed the new address. Real proxy processes
 * (microsocks + tinyproxy) on loopback addresses, in-process simulated modems with no attach time;
 * the modem machine's detach wait (`detachMs`, a deliberate pause) is subtracted.
 */
export interface RotationFigures {
  rotations: number;
  detachMs: number;
  p50Ms: number;
  maxMs: number;
  backend: string;
}

export async function rotationLatency(sql: Sql, url: string, rotations: number): Promise<RotationFigures> {
  if (!(await findProgram('microsocks')) || !(await findProgram('tinyproxy')))
    throw new Error('the rotation benchmark needs microsocks and tinyproxy (bash scripts/setup.sh)');
  const echo: Server = createServer((req, res) => res.end(`${req.socket.remoteAddress ?? ''}\n`));
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  const address = echo.address();
  const echoUrl = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}/`;
  const runDir = await mkdtemp(join(tmpdir(), 'mf-bench-run-'));
  await chmod(runDir, 0o711);
  const detachMs = 100;
  const farm = await startFarm(
    sql,
    url,
    2,
    {
      modem: { registrationPollMs: 20, signalPollMs: 60_000, detachMs, probeRetryMs: 50 },
      dataPlane: {
        routing: false,
        backend: 'microsocks+tinyproxy',
        listen: '127.0.0.1',
        prefix: 32,
        runDir,
        dns: [],
        rulePriorityBase: 1_000,
        egress: { url: echoUrl, intervalMs: 600_000 },
      },
    },
    (i) => ({ subnet: `127.0.${30 + i}` }),
  );
  try {
    await farm.lab.start();
    await farm.supervisor.start();
    const imei = farm.lab.modem(0).imei;
    const ready = async () => {
      const [m] = await farm.store.modems({ imei });
      return m?.state === 'online' && m.substate === 'online.serving' && m.proxy !== null;
    };
    while (!(await ready())) await sleep(50);
    await sleep(500); // the proxies are up
    const times: number[] = [];
    for (let r = 0; r < rotations; r++) {
      const t0 = performance.now();
      const id = await farm.store.insertCommand(imei, 'rotate', 'bench');
      for (;;) {
        const c = await farm.store.command(id);
        if (c?.status === 'done') break;
        if (c?.status === 'failed') throw new Error(`rotation failed: ${JSON.stringify(c.result)}`);
        await sleep(5);
      }
      times.push(performance.now() - t0 - detachMs);
      while (!(await ready())) await sleep(10);
    }
    times.sort((a, b) => a - b);
    return {
      rotations,
      detachMs,
      p50Ms: Math.round(times[Math.floor(times.length / 2)] ?? NaN),
      maxMs: Math.round(times.at(-1) ?? NaN),
      backend: 'microsocks+tinyproxy',
    };
  } finally {
    await farm.stop();
    await new Promise<void>((resolve) => echo.close(() => resolve()));
    await rm(runDir, { recursive: true, force: true });
  }
}
