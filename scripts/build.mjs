// `npm run build`: compiles src/ and machines/ to dist/ with TypeScript 7, then writes
// dist/build-stamp.json with the fingerprint of the sources it compiled (taken before compiling,
// so an edit during the build leaves dist/ marked stale). bin/modemfleet.js runs dist/ only when
// that fingerprint still matches the sources.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { STAMP_FILE, sourceStamp } from './sourceStamp.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const stamp = join(root, STAMP_FILE);
rmSync(stamp, { force: true }); // an interrupted build must not look fresh
const sources = sourceStamp(root);
const tsc = spawnSync(
  process.execPath,
  [join(root, 'node_modules/tsc7/bin/tsc'), '-p', 'tsconfig.build.json'],
  {
    cwd: root,
    stdio: 'inherit',
  },
);
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
mkdirSync(dirname(stamp), { recursive: true });
writeFileSync(stamp, `${JSON.stringify({ sources, builtAt: new Date().toISOString() })}\n`);
