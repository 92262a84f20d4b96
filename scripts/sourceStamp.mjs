// The fingerprint of what `npm run build` compiles: every TypeScript/JSON file under src/ and
// machines/, the tsconfig files and package.json, by path and content (SHA-256). scripts/build.mjs
// writes it to dist/build-stamp.json; bin/modemfleet.js compares it before it runs dist/.
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

const DIRS = ['src', 'machines'];
const FILES = ['package.json', 'tsconfig.json', 'tsconfig.build.json'];
const COMPILED = /\.(ts|mts|cts|json)$/;

export const STAMP_FILE = 'dist/build-stamp.json';

function walk(root, dir, out) {
  let entries;
  try {
    entries = readdirSync(join(root, dir), { withFileTypes: true });
  } catch {
    return;
  }
  for (const e of entries) {
    const rel = `${dir}/${e.name}`;
    if (e.isDirectory()) walk(root, rel, out);
    else if (e.isFile() && COMPILED.test(e.name)) out.push(rel);
  }
}

/** SHA-256 over the sorted paths and contents of the build's inputs under `root`. */
export function sourceStamp(root) {
  const files = [];
  for (const d of DIRS) walk(root, d, files);
  files.sort();
  const hash = createHash('sha256');
  for (const f of [...FILES, ...files]) {
    let content;
    try {
      content = readFileSync(join(root, f));
    } catch {
      content = undefined;
    }
    hash.update(`${f}\0${content === undefined ? 'missing' : content.length}\0`);
    if (content) hash.update(content);
  }
  return hash.digest('hex');
}
