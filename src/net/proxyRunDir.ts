import { createHash } from 'node:crypto';
import { mkdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import type { Logger } from '../log.js';
import { firstBlocked } from '../process/pgPlacement.js';

/** Where proxies' configs and pid files go when the configured run dir is out of their reach. */
export const PROXY_RUN_ROOT = '/run/modemfleet';

/**
 * The run dir the proxies read their configs from. Each proxy runs under a uid of its own that
 * owns no directory above its config, so every directory there must let "others" through. A state
 * dir in a 0700 directory (a checkout under /root, `mktemp -d`) does not: then the run dir is
 * `/run/modemfleet/proxies-<hash of the configured path>` (the same one on every start, so a
 * restart finds the pid files its predecessor left). Unchanged when the proxies run as we do.
 */
export async function proxyRunDir(configured: string, dropsUid: boolean, log: Logger): Promise<string> {
  const runDir = resolve(configured);
  if (!dropsUid) return runDir;
  const nobody = { uid: -1, gid: -1 };
  const existing = await stat(runDir).catch(() => undefined);
  const blocked = await firstBlocked(existing ? runDir : dirname(runDir), nobody);
  if (blocked === undefined) return runDir;
  const placed = join(
    PROXY_RUN_ROOT,
    `proxies-${createHash('sha256').update(runDir).digest('hex').slice(0, 16)}`,
  );
  await mkdir(PROXY_RUN_ROOT, { recursive: true, mode: 0o711 });
  await mkdir(placed, { recursive: true, mode: 0o711 });
  log.info(
    { configured: runDir, runDir: placed, blocked },
    `the proxies cannot reach ${runDir} (${blocked} lets no other user through); their configs go to ${placed}`,
  );
  return placed;
}
