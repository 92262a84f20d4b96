import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ModemfleetError } from '../util/errors.js';
import { procStat, processAlive } from './proxyRecord.js';

/**
 * One supervisor per run dir: `supervisor.lock` holds `PID START` (start time, /proc/PID/stat) of
 * the supervisor using it. Another live one's proxies are not ours to adopt or kill, and
 * `modemfleet stop-proxies` must not pull the proxies from under a running supervisor.
 */
const LOCK = 'supervisor.lock';

/** The live supervisor (pid) holding `runDir`, other than this process; undefined when none. */
export async function runDirHolder(runDir: string): Promise<number | undefined> {
  const text = await readFile(join(runDir, LOCK), 'utf8').catch(() => '');
  const [pid, start] = text.trim().split(/\s+/).map(Number);
  if (!Number.isInteger(pid) || !Number.isInteger(start) || pid === undefined || start === undefined)
    return undefined;
  if (pid <= 1 || pid === process.pid) return undefined;
  return (await processAlive(pid, start)) ? pid : undefined;
}

/** Takes `runDir` for this process; `supervisor_running` when another live supervisor has it. */
export async function claimRunDir(runDir: string): Promise<void> {
  // proxies under their own uids read their configs here: traversable, not listable
  await mkdir(runDir, { recursive: true, mode: 0o711 });
  const holder = await runDirHolder(runDir);
  if (holder !== undefined)
    throw new ModemfleetError(
      'supervisor_running',
      `another modemfleet supervisor (pid ${holder}) uses ${runDir}: stop it first, or give this one another dataPlane.runDir`,
    );
  const start = (await procStat(process.pid))?.start ?? 0;
  await writeFile(join(runDir, LOCK), `${process.pid} ${start}\n`, { mode: 0o600 });
}

/** Gives `runDir` up (only when this process holds it). */
export async function releaseRunDir(runDir: string): Promise<void> {
  const text = await readFile(join(runDir, LOCK), 'utf8').catch(() => '');
  if (Number(text.trim().split(/\s+/)[0]) === process.pid) await rm(join(runDir, LOCK), { force: true });
}
