import { describe, expect, it } from 'vitest';
import { AlertQueue } from '../../src/fleet/alertQueue.js';
import type { AlertInput } from '../../src/store/types.js';
import { until } from '../helpers/until.js';

const alert = (kind: string): AlertInput => ({ kind, severity: 'critical', message: kind });
const soon = { timeoutMs: 2_000, intervalMs: 10 };

describe('AlertQueue', () => {
  it('keeps alerts while the database is away and stores them in order, with the time they were raised', async () => {
    let up = false;
    const stored: AlertInput[] = [];
    const queue = new AlertQueue(
      (a) => (up ? Promise.resolve(stored.push(a)) : Promise.reject(new Error('connection refused'))),
      { retryBaseMs: 5, retryCapMs: 20 },
    );
    queue.push(alert('spool_full'));
    await new Promise((r) => setTimeout(r, 5));
    queue.push(alert('journal_gap'));
    const raised = Date.now();
    await new Promise((r) => setTimeout(r, 50));
    expect(stored).toEqual([]);
    expect(queue.waiting).toBe(2);
    up = true;
    await until(() => stored.length === 2, soon);
    expect(stored.map((a) => a.kind)).toEqual(['spool_full', 'journal_gap']);
    for (const a of stored) expect(a.raisedAt?.getTime()).toBeLessThanOrEqual(raised);
    expect(queue.waiting).toBe(0);
    await queue.stop();
  });

  it('is bounded: past max the oldest are dropped and counted; stop does not retry forever', async () => {
    const queue = new AlertQueue(() => Promise.reject(new Error('down')), { max: 3, retryBaseMs: 5 });
    for (let i = 0; i < 5; i++) queue.push(alert(`a${i}`));
    expect(queue.waiting).toBe(3);
    expect(queue.dropped).toBe(2);
    await queue.stop();
    expect(queue.waiting).toBe(3);
  });
});
