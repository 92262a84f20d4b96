import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { pathExists } from '../util/fs.js';

/** The web page's files, served from memory (no CDN: the page works on a farm without internet). */
const FILES = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/style.css': { file: 'style.css', type: 'text/css; charset=utf-8' },
  '/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
} as const;

export type Page = Map<string, { body: Buffer; type: string }>;

const CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
  "form-action 'none'",
].join('; ');

/** The page directory next to this module (sources) or in the source tree (a compiled build). */
async function pageDir(): Promise<string> {
  const candidates = [
    new URL('./page/', import.meta.url),
    new URL('../../../src/inspector/page/', import.meta.url),
  ];
  for (const c of candidates) {
    const dir = fileURLToPath(c);
    if (await pathExists(`${dir}index.html`)) return dir;
  }
  throw new Error('the inspector page files (src/inspector/page) are missing');
}

export async function loadPage(): Promise<Page> {
  const dir = await pageDir();
  const page: Page = new Map();
  for (const [route, { file, type }] of Object.entries(FILES))
    page.set(route, { body: await readFile(`${dir}${file}`), type });
  return page;
}

export function registerPage(app: FastifyInstance, page: Page): void {
  for (const [route, { body, type }] of page) {
    app.get(route, async (_req, reply) =>
      reply
        .header('content-type', type)
        .header('content-security-policy', CSP)
        .header('x-frame-options', 'DENY')
        .header('cache-control', 'no-cache')
        .send(body),
    );
  }
}
