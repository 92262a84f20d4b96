/// <reference lib="dom" />
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Inspector } from '../../src/inspector/inspector.js';
import { Store } from '../../src/store/store.js';
import type { HealthSample, TransitionRecord } from '../../src/store/types.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TOKEN } from '../helpers/farm.js';

/** The modem panel's 24-hour charts in a real Chromium: the points drawn are the API's answer. */

const CHROMIUM = process.env['MODEMFLEET_CHROMIUM'] ?? '/usr/bin/chromium';
const SCREENSHOTS = join(import.meta.dirname, '..', '..', 'var', 'screenshots');
const IMEI = '356000000000201';
const OTHER = '356000000000202';
const H = 3_600_000;

let db: TestDatabase;
let store: Store;
let inspector: Inspector;
let browser: Browser;

interface History {
  from: string;
  to: string;
  signal: { at: string; rssi: number | null; rsrp: number | null; sinr: number | null; samples: number }[];
  states: { at: string; state: string }[];
}

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-a' });
  await store.registerHost();
  for (const imei of [IMEI, OTHER]) await store.upsertModem({ imei });
  const now = Date.now();
  const steps: [string, number][] = [
    ['detecting.probing', 30 * H],
    ['online.serving', 21 * H],
    ['recovering.reinit', 8 * H],
    ['error', 7.5 * H],
    ['initializing.registering', 6.1 * H],
    ['online.serving', 6 * H],
    ['disabling', 2 * H],
    ['disabled', 2 * H - 1_000],
    ['enabling', 1.5 * H],
    ['online.serving', 1.5 * H - 30_000],
  ];
  const journal: TransitionRecord[] = steps.map(([to, ago], i) => ({
    imei: IMEI,
    seq: i + 1,
    from: i === 0 ? null : (steps[i - 1]?.[0] ?? null),
    to,
    event: 'test',
    at: new Date(now - ago),
  }));
  await store.appendTransitions([
    ...journal,
    { imei: OTHER, seq: 1, from: null, to: 'online.serving', event: 'test', at: new Date(now - H) },
  ]);
  // a poll every 100 s while online (none from 8 h to 6 h ago: recovering, then error), every
  // tenth one on 3G (no RSRP, no SINR)
  const samples: HealthSample[] = [];
  for (let ago = 21 * H - 50_000; ago > 30_000; ago -= 100_000) {
    if (ago < 8 * H && ago > 6 * H) continue;
    const i = samples.length;
    const lte = i % 10 !== 3;
    samples.push({
      imei: IMEI,
      at: new Date(now - ago),
      rssi: -55 - (i % 30),
      rsrp: lte ? -75 - ((i * 13) % 50) : null,
      sinr: lte ? ((i * 11) % 40) - 10 + 0.5 : null,
    });
  }
  await store.recordHealth(samples);
  inspector = new Inspector({ store, host: '127.0.0.1', port: 0, token: TOKEN });
  await inspector.start();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
afterAll(async () => {
  await browser?.close();
  await inspector?.stop();
  await db?.drop();
});

describe('inspector page: the modem panel charts the last 24 h', () => {
  it('draws the state strip and the RSRP and SINR lines from GET /api/modems/:imei/history, point for point', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${inspector.url}/#token=${TOKEN}`);
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 2);

    const answered = page.waitForResponse((r) => r.url().includes(`/api/modems/${IMEI}/history?hours=24`));
    await page.click(`.card[data-imei="${IMEI}"]`);
    await page.waitForSelector('#panel:not([hidden])');
    const response = await answered;
    expect(response.status()).toBe(200);
    const drawnFrom = (await response.json()) as History;
    await page.waitForFunction(() => document.querySelectorAll('#p-rsrp circle').length > 0);

    const drawn = await page.evaluate(() => {
      const points = (id: string) =>
        [...document.querySelectorAll(`#${id} circle`)].map((c) => ({
          at: c.getAttribute('data-at'),
          value: Number(c.getAttribute('data-value')),
          title: c.querySelector('title')?.textContent ?? '',
        }));
      const strip = [...document.querySelectorAll('#p-states rect')];
      return {
        states: strip.map((r) => ({ at: r.getAttribute('data-at'), state: r.getAttribute('data-state') })),
        fills: strip.map((r) => getComputedStyle(r).fill),
        widths: strip.map((r) => Number(r.getAttribute('width'))),
        rsrp: points('p-rsrp'),
        sinr: points('p-sinr'),
        rsrpPath: document.querySelector('#p-rsrp path')?.getAttribute('d') ?? '',
        note: document.querySelector('#p-history-note')?.textContent ?? '',
      };
    });

    // the page drew exactly what the API answered
    expect(drawn.states).toEqual(drawnFrom.states);
    const series = (key: 'rsrp' | 'sinr') =>
      drawnFrom.signal.flatMap((p) => (p[key] === null ? [] : [{ at: p.at, value: p[key] }]));
    expect(drawn.rsrp.map(({ at, value }) => ({ at, value }))).toEqual(series('rsrp'));
    expect(drawn.sinr.map(({ at, value }) => ({ at, value }))).toEqual(series('sinr'));

    // ...which is what the journal and the polls say: states by top level, 5-minute means
    expect(drawn.states.map((s) => s.state)).toEqual([
      'detecting',
      'online',
      'recovering',
      'error',
      'initializing',
      'online',
      'disabling',
      'disabled',
      'enabling',
      'online',
    ]);
    expect(drawn.rsrp.length).toBeGreaterThan(150);
    expect(drawn.rsrp.length).toBeLessThanOrEqual(288);
    expect(drawn.rsrp.some((p) => p.title.includes('mean of'))).toBe(true);
    expect(drawn.note).toMatch(/^\d+ signal polls$/);
    // the line breaks over the 2 hours without polls
    expect((drawn.rsrpPath.match(/M/g) ?? []).length).toBeGreaterThanOrEqual(2);
    // coloured by state (style.css: online green, error red), widths in proportion
    const online = drawn.fills[1];
    expect(online).toBe('rgb(31, 157, 85)');
    expect(drawn.fills[3]).toBe('rgb(211, 59, 59)');
    expect(drawn.widths[1] ?? 0).toBeGreaterThan(drawn.widths[3] ?? Infinity);

    // asked again (a moment later), the API gives the same points: buckets lie on the clock
    const again = (await (
      await fetch(`${inspector.url}/api/modems/${IMEI}/history?hours=24`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      })
    ).json()) as History;
    if (again.from === drawnFrom.from) expect(again.signal).toEqual(drawnFrom.signal);

    // another modem's panel: its own charts
    const other = page.waitForResponse((r) => r.url().includes(`/api/modems/${OTHER}/history`));
    await page.click(`.card[data-imei="${OTHER}"]`);
    await other;
    await page.waitForFunction(() => document.querySelectorAll('#p-states rect').length === 1);
    expect(await page.locator('#p-states rect').getAttribute('data-state')).toBe('online');
    expect(await page.locator('#p-rsrp circle').count()).toBe(0);
    expect(await page.locator('#p-history-note').textContent()).toBe('no signal polls');

    await page.click(`.card[data-imei="${IMEI}"]`);
    await page.waitForFunction(() => document.querySelectorAll('#p-rsrp circle').length > 0);
    await mkdir(SCREENSHOTS, { recursive: true });
    await page.locator('#p-history').screenshot({ path: join(SCREENSHOTS, 'history-charts.png') });
    expect(errors).toEqual([]);
    await page.close();
  });
});
