/// <reference lib="dom" />
import type { Page } from 'playwright-core';

/** One hour's bar of the modem panel's traffic chart, as the page drew it. */
export interface ChartBar {
  at: string | undefined;
  download: number;
  upload: number;
  /** The download bar's drawn height. */
  height: number;
}

/**
 * The modem panel's 24-h traffic chart (`#p-traffic-chart`) as the page drew it: the chart's totals
 * and each hour's bar (its `data-*` figures and height). The panel must be open.
 */
export async function readTrafficChart(
  page: Page,
): Promise<{ download: number; upload: number; bars: ChartBar[] }> {
  await page.waitForSelector('#p-traffic-chart g.bar', { state: 'attached' });
  return page.evaluate(() => {
    const svg = document.getElementById('p-traffic-chart');
    const bars = [...(svg?.querySelectorAll('g.bar') ?? [])].map((g) => ({
      at: (g as SVGGElement).dataset['at'],
      download: Number((g as SVGGElement).dataset['download']),
      upload: Number((g as SVGGElement).dataset['upload']),
      height: Number(g.querySelector('rect.down')?.getAttribute('height')),
    }));
    return { download: Number(svg?.dataset['download']), upload: Number(svg?.dataset['upload']), bars };
  });
}
