/// <reference lib="dom" />
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Store } from '../../src/store/store.js';
import type { TransitionRecord } from '../../src/store/types.js';
import { onlineCount, startFarm, TOKEN, until, type TestFarm } from '../helpers/farm.js';

/** The web page in a real Chromium (Debian's), against a running supervisor and PostgreSQL. */

const CHROMIUM = process.env['MODEMFLEET_CHROMIUM'] ?? '/usr/bin/chromium';
const SCREENSHOTS = join(import.meta.dirname, '..', '..', 'var', 'screenshots');

let farm: TestFarm;
let browser: Browser;

beforeAll(async () => {
  farm = await startFarm({ modems: 6, seed: 11 });
  await until(async () => (await onlineCount(farm)) === 6, 30_000, '6 online');
  await until(async () => (await farm.store.modems()).every((m) => m.proxy !== null), 10_000, 'allocations');
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] });
});
afterAll(async () => {
  await browser?.close();
  await farm?.stop();
});

describe('inspector web page', () => {
  it('lists the modems, shows a state change within 1 s, rotates from the panel; saves a screenshot', async () => {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${farm.url}/#token=${TOKEN}`);
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 6);
    expect(await page.locator('#conn').textContent()).toBe('live');
    expect(await page.locator('.card[data-state="online"]').count()).toBe(6);
    // the token left the address bar
    expect(new URL(page.url()).hash).toBe('');
    const modems = await farm.store.modems();
    const first = modems.find((m) => m.imei === farm.lab.modem(0).imei);
    const second = modems.find((m) => m !== first);
    if (!first || !second) throw new Error('no modems');
    const card = page.locator(`.card[data-imei="${second.imei}"]`);
    expect(await card.locator('.addr').textContent()).toBe(second.wanIp);
    expect(await card.locator('.pt').textContent()).toContain(String(second.socksPort));

    // a state change committed to the database shows within 1 s
    await farm.lab.unplug(0);
    await until(
      async () => (await farm.store.modems({ imei: first.imei }))[0]?.state === 'removed',
      10_000,
      'the unplugged modem to be removed',
    );
    const committed = Date.now();
    await page.waitForSelector(`.card[data-imei="${first.imei}"][data-state="removed"]`, { timeout: 1_000 });
    const shownAfterMs = Date.now() - committed;
    expect(shownAfterMs).toBeLessThan(1_000);

    // search filters the grid
    await page.fill('#search', second.wanIp ?? '');
    await page.waitForFunction(() => document.querySelectorAll('.card:not([hidden])').length === 1);
    await page.fill('#search', '');

    // rotate from the panel: confirmation, command, timeline
    await card.click();
    await page.waitForSelector('#panel:not([hidden])');
    expect(await page.locator('#p-title').textContent()).toBe(second.imei);
    await page.waitForFunction(() => document.querySelectorAll('#p-timeline li').length > 0);
    await page.click('button[data-kind="rotate"]');
    await page.waitForSelector('#confirm[open]');
    await page.click('#confirm-ok');
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('#p-timeline .to')].some((e) =>
          e.textContent?.startsWith('online.rotating'),
        ),
      undefined,
      { timeout: 15_000 },
    );
    await page.waitForFunction(
      () => /: done/.test(document.querySelector('#p-command')?.textContent ?? ''),
      undefined,
      {
        timeout: 20_000,
      },
    );
    const [command] = await farm.db.sql<
      { kind: string; status: string; requested_by: string; result: { wanIp?: string } }[]
    >`select kind, status, requested_by, result from modem_commands where imei = ${second.imei} order by id desc limit 1`;
    expect(command).toMatchObject({ kind: 'rotate', status: 'done' });
    expect(command?.requested_by).toMatch(/^api:/);
    // the card follows to the rotation's new address
    const newIp = command?.result.wanIp ?? '';
    expect(newIp).not.toBe(second.wanIp);
    await page.waitForFunction(
      ([imei, ip]) => document.querySelector(`.card[data-imei="${imei}"] .addr`)?.textContent === ip,
      [second.imei, newIp] as const,
    );

    // a rotation link from the panel: the previewer warning is shown, and said again when it is made
    expect(await page.locator('#p-link .warning').textContent()).toMatch(/previewers/);
    expect(await page.locator('#p-link-state').textContent()).toBe('none');
    await page.click('#p-link-new');
    await page.waitForSelector('#confirm[open]');
    expect(await page.locator('#confirm-text').textContent()).toMatch(/link previewers open the links/);
    await page.click('#confirm-ok');
    await page.waitForSelector('#p-link-url:not([hidden])');
    const linkUrl = await page.locator('#p-link-url').inputValue();
    expect(linkUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/rotate\/[A-Za-z0-9_-]{43}$/);
    await page.waitForFunction(() =>
      /^active since/.test(document.querySelector('#p-link-state')?.textContent ?? ''),
    );
    expect((await fetch(linkUrl, { method: 'POST' })).status).toBe(202);

    await mkdir(SCREENSHOTS, { recursive: true });
    await page.screenshot({ path: join(SCREENSHOTS, 'inspector.png') });
    expect(errors).toEqual([]);
    await page.close();
  });

  it('asks for a token when it has none or a wrong one', async () => {
    const page = await browser.newPage();
    await page.goto(`${farm.url}/`);
    await page.waitForSelector('#login:not([hidden])');
    await page.fill('#token', 'wrong-token-wrong-token');
    await page.click('#login button');
    await page.waitForFunction(
      () => /refused/.test(document.querySelector('#login-error')?.textContent ?? ''),
      undefined,
      {
        timeout: 15_000,
      },
    );
    await page.fill('#token', TOKEN);
    await page.click('#login button');
    await page.waitForFunction(() => document.querySelectorAll('.card').length >= 6);
    await page.close();
  });

  it('a read-only token: the grid works, the header says so, no commands offered, no password shown', async () => {
    const { token } = await farm.store.createToken({
      name: 'browser-ro',
      scope: 'read-only',
      createdBy: 'test',
    });
    const modems = (await farm.store.modems()).filter((m) => m.state === 'online');
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    await page.goto(`${farm.url}/#token=${token}`);
    await page.waitForFunction((n) => document.querySelectorAll('.card').length >= n, modems.length);
    await page.waitForSelector('#scope:not([hidden])');
    expect(await page.locator('#scope').textContent()).toMatch(/read-only/);
    const target = modems[0];
    if (!target) throw new Error('no online modem');
    await page.locator(`.card[data-imei="${target.imei}"]`).click();
    await page.waitForSelector('#panel:not([hidden])');
    expect(await page.locator('.actions').isHidden()).toBe(true);
    expect(await page.locator('#p-readonly').isVisible()).toBe(true);
    await page.waitForFunction(() =>
      /hidden from this token/.test(document.querySelector('#p-facts')?.textContent ?? ''),
    );
    const text = (await page.content()) + JSON.stringify(await page.evaluate(() => localStorage));
    for (const m of await farm.store.modems())
      if (m.proxy?.password) expect(text).not.toContain(m.proxy.password);
    expect(errors).toEqual([]);
    await page.close();
  });

  it('renders 500 more modems of another host as a window of cards, keeps up with their transitions, finds any', async () => {
    const other = new Store({ sql: farm.db.sql, url: farm.db.url, hostId: 'host-big' });
    await other.registerHost();
    const imeis = Array.from({ length: 500 }, (_, i) => `35${String(i).padStart(12, '0')}7`.slice(0, 15));
    const at = new Date();
    const boot: TransitionRecord[] = imeis.flatMap((imei) => [
      { imei, seq: 1, from: null, to: 'detecting', event: 'start', at, host: 'host-big' },
      {
        imei,
        seq: 2,
        from: 'detecting',
        to: 'online.serving',
        event: 'device.ok',
        at,
        host: 'host-big',
        wanIp: '10.9.0.1',
      },
    ]);
    await other.appendTransitions(boot);
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const started = Date.now();
    await page.goto(`${farm.url}/#token=${TOKEN}`);
    // a window of 240 cards (the farm's first, in host and slot order); counts cover all 506
    await page.waitForFunction(
      () =>
        document.querySelectorAll('.card').length === 240 &&
        document.querySelector('#grid .more')?.textContent === 'show 240 more of 266' &&
        document.querySelector('#counts')?.getAttribute('title') === '506 modems',
      undefined,
      { timeout: 10_000 },
    );
    const renderMs = Date.now() - started;
    // the first screen came first (`?first=240`), the other 266 rows after it: both marked
    expect(
      await page.evaluate(() =>
        ['modemfleet:rendered', 'modemfleet:complete'].map((n) => performance.getEntriesByName(n).length),
      ),
    ).toEqual([1, 1]);
    // every one of the 500 goes to error at once: the page shows all of them
    await other.appendTransitions(
      imeis.map((imei) => ({
        imei,
        seq: 3,
        from: 'online.serving',
        to: 'error',
        event: 'dataplane.failed',
        at: new Date(),
        host: 'host-big',
        reason: 'proxy_failed',
      })),
    );
    const burst = Date.now();
    // the 234 of them in the window show it, the counts show all 500
    await page.waitForFunction(
      () =>
        document.querySelectorAll('.card[data-state="error"]').length === 234 &&
        document.querySelector('#counts .chip[data-state="error"]')?.textContent === 'error 500',
      undefined,
      { timeout: 10_000 },
    );
    const shownMs = Date.now() - burst;
    await page.click('#grid .more');
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 480);
    // search covers every modem, not only the window's: the last one is found
    const last = imeis.at(-1) ?? '';
    await page.fill('#search', last);
    await page.waitForFunction(
      (imei) =>
        document.querySelectorAll('.card').length === 1 &&
        document.querySelector(`.card[data-imei="${imei}"][data-state="error"]`) !== null,
      last,
    );
    await page.fill('#search', '');
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 240);
    console.log(`500-modem page: first render ${renderMs} ms, 500 transitions shown in ${shownMs} ms`);
    await page.close();
  });
});
