/// <reference lib="dom" />
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onlineCount, startFarm, TOKEN, until, type TestFarm } from '../helpers/farm.js';
import { readTrafficChart } from '../helpers/trafficChart.js';

/** The modem panel's traffic in a real Chromium: today, this month, the last 24 h per hour, the quota. */

const CHROMIUM = process.env['MODEMFLEET_CHROMIUM'] ?? '/usr/bin/chromium';

let farm: TestFarm;
let browser: Browser;

beforeAll(async () => {
  farm = await startFarm({ modems: 2, seed: 5 });
  await until(async () => (await onlineCount(farm)) === 2, 30_000, '2 online');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
afterAll(async () => {
  await browser?.close();
  await farm?.stop();
});

describe('traffic on the page', () => {
  it('the panel draws the bytes of the last 24 hours per hour, with totals and the quota', async () => {
    const [modem] = await farm.store.modems();
    if (!modem) throw new Error('no modem');
    const now = Date.now();
    const minute = (agoMin: number) => new Date(Math.floor((now - agoMin * 60_000) / 60_000) * 60_000);
    // two readings of one counter instance: 1.2 MB / 34 kB, then 2 MB more down
    await farm.store.recordTraffic([
      {
        imei: modem.imei,
        host: 'host-a',
        at: new Date(now - 90 * 60_000),
        minute: minute(91),
        instance: 'abcd0001',
        download: 1_200_000,
        upload: 34_000,
      },
      {
        imei: modem.imei,
        host: 'host-a',
        at: new Date(now - 30 * 60_000),
        minute: minute(31),
        instance: 'abcd0001',
        download: 3_200_000,
        upload: 34_000,
      },
    ]);
    await farm.store.setQuota(modem.imei, { bytes: 10_000_000_000, period: 'month' }, 'test');
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${farm.url}/#token=${TOKEN}`);
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 2);
    await page.locator(`.card[data-imei="${modem.imei}"]`).click();
    const chart = await readTrafficChart(page);
    expect(chart.bars.length).toBeGreaterThanOrEqual(23);
    expect(chart.download).toBe(3_200_000);
    expect(chart.upload).toBe(34_000);
    expect(chart.bars.reduce((n, b) => n + b.download, 0)).toBe(3_200_000);
    // the tallest bar is the hour with the most bytes
    const tallest = chart.bars.reduce((a, b) => (b.height > a.height ? b : a));
    expect(tallest.download).toBe(Math.max(...chart.bars.map((b) => b.download)));
    const totals = await page.locator('#p-traffic-totals').textContent();
    // (in a month's first 91 minutes a reading falls in the month before: UTC months)
    const monthStart = new Date(now);
    monthStart.setUTCDate(1);
    monthStart.setUTCHours(0, 0, 0, 0);
    const inMonth = (agoMin: number): boolean => minute(agoMin) >= monthStart;
    const month = inMonth(91) ? '3.20 MB ↑ 34.0 kB' : inMonth(31) ? '2.00 MB ↑ 0 B' : '0 B ↑ 0 B';
    expect(totals).toContain(`this month ↓ ${month}`);
    expect(totals).toContain('today ↓');
    expect(await page.locator('#p-facts').textContent()).toContain('0 B of 10.0 GB this month');
    expect(errors).toEqual([]);
    await page.close();
  });
});
