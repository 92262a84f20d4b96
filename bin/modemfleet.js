#!/usr/bin/env node
// Entry point of the `modemfleet` command. Runs the compiled build (npm run build) only when it was
// built from the sources as they are now (dist/build-stamp.json holds their fingerprint); otherwise
// the TypeScript sources through tsx, so `npx modemfleet` works right after `npm ci` and never runs
// a stale dist/ silently: a dist/ that no longer matches the sources is named on stderr, once.
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { STAMP_FILE, sourceStamp } from '../scripts/sourceStamp.mjs';

const root = fileURLToPath(new URL('..', import.meta.url));
const built = `${root}dist/src/cli.js`;

/** Why dist/ must not run, or undefined when it matches the sources. */
function staleness() {
  let stamp;
  try {
    stamp = JSON.parse(readFileSync(`${root}${STAMP_FILE}`, 'utf8'));
  } catch {
    return 'has no build stamp';
  }
  return stamp?.sources === sourceStamp(root) ? undefined : 'is older than the sources';
}

const stale = existsSync(built) ? staleness() : 'is absent';
if (stale === undefined) {
  await import(pathToFileURL(built).href);
} else {
  if (stale !== 'is absent')
    process.stderr.write(`modemfleet: dist/ ${stale} (npm run build); running the sources through tsx\n`);
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(`${root}src/cli.ts`).href);
}
