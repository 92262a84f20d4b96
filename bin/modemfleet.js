#!/usr/bin/env node
// Entry point of the `modemfleet` command. Runs the compiled build when present (npm run build),
// otherwise the TypeScript sources through tsx, so `npx modemfleet` works right after `npm ci`.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const built = `${root}dist/src/cli.js`;
if (existsSync(built)) {
  await import(pathToFileURL(built).href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(pathToFileURL(`${root}src/cli.ts`).href);
}
