/// <reference lib="dom" />
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Inspector } from '../../src/inspector/inspector.js';
import { Store } from '../../src/store/store.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { TOKEN } from '../helpers/farm.js';
import { until } from '../helpers/until.js';

/** The page's push-alert controls in a real Chromium: ack an alert, silence a modem and end it. */

const CHROMIUM = process.env['MODEMFLEET_CHROMIUM'] ?? '/usr/bin/chromium';
const IMEI = '356000000000007';
let db: TestDatabase;
let store: Store;
let inspector: Inspector;
let browser: Browser;

beforeAll(async () => {
  db = await createTestDatabase();
  store = new Store({ sql: db.sql, url: db.url, hostId: 'host-a' });
  await db.sql`insert into hosts (id, name) values ('host-a', 'a')`;
  await db.sql`insert into modems (imei, host_id, state) values (${IMEI}, 'host-a', 'online')`;
  inspector = new Inspector({ store, host: '127.0.0.1', port: 0, token: TOKEN });
  await inspector.start();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
afterAll(async () => {
  await browser?.close();
  await inspector?.stop();
  await db?.drop();
});

describe('inspector page: push alerts', () => {
  it('acknowledges an alert and silences a modem from the page', async () => {
    const id = await store.raiseAlert({
      kind: 'sim_swap',
      severity: 'warning',
      message: 'new ICCID',
      imei: IMEI,
    });
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${inspector.url}/#token=${TOKEN}`);
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 1);

    await page.click('#alerts-button');
    await page.click('#alert-list button.ack');
    await page.waitForSelector('#alert-list .acked');
    const [acked] = await store.alerts({ imei: IMEI });
    expect(acked).toMatchObject({ id, ackedBy: expect.stringMatching(/^api:/) as unknown });

    await page.click(`.card[data-imei="${IMEI}"]`);
    await page.waitForSelector('#panel:not([hidden])');
    expect(await page.locator('#p-silence').textContent()).toBe('Silence alerts 2 h');
    await page.click('#p-silence');
    await page.waitForFunction(() => document.querySelector('#p-silence')?.textContent === 'End silence');
    const [silence] = await store.silences();
    expect(silence?.imei).toBe(IMEI);
    expect(silence?.until.getTime()).toBeGreaterThan(Date.now() + 7_000_000);
    expect(await page.locator('#silenced-list').textContent()).toContain(IMEI);

    await page.click('#p-silence');
    await page.waitForFunction(
      () => document.querySelector('#p-silence')?.textContent === 'Silence alerts 2 h',
    );
    await until(async () => (await store.silences()).length === 0, 5_000, 'the silence ended');
    expect(errors).toEqual([]);
    await page.close();
  });
});
