import { fc, test } from '@fast-check/vitest';
import { expect } from 'vitest';
import { AtSession } from '../../src/at/atSession.js';
import { LineFramer } from '../../src/at/lineFramer.js';

const chunk = fc.oneof(
  fc.uint8Array({ maxLength: 300 }),
  fc
    .constantFrom(
      '\r\nOK\r\n',
      '\r\nERROR\r\n',
      '\r\n+CME ERROR: 10\r\n',
      'RDY\r\n',
      '+CPIN: READY\r\n',
      '\x00\x00',
      '\r',
      '\n',
    )
    .map((s) => Buffer.from(s, 'latin1')),
  fc.integer({ min: 1, max: 20_000 }).map((n) => Buffer.alloc(n, 0x41)),
);

test.prop([fc.array(chunk, { maxLength: 60 })], { numRuns: 300 })(
  'the framer never throws and stays within its bound',
  (chunks) => {
    const f = new LineFramer(4096);
    for (const c of chunks) {
      for (const e of f.push(Buffer.from(c)))
        if (e.type === 'line') expect(e.line.length).toBeLessThanOrEqual(4096);
      expect(f.buffered).toBeLessThanOrEqual(4096);
    }
  },
);

test.prop([fc.array(fc.tuple(fc.boolean(), chunk), { maxLength: 40 })], { numRuns: 200 })(
  'arbitrary bytes and commands: never throws, memory bounded, every command settled on close',
  async (steps) => {
    const s = new AtSession({ write: () => Promise.resolve(), maxQueue: 8, defaultTimeoutMs: 60_000 });
    const settled: Promise<unknown>[] = [];
    for (const [send, bytes] of steps) {
      if (send)
        settled.push(
          s.send('AT+CSQ').then(
            () => 'ok',
            (e: unknown) => (e as { code: string }).code,
          ),
        );
      s.feed(Buffer.from(bytes));
      expect(s.load.bufferedBytes).toBeLessThanOrEqual(4096);
      expect(s.load.queued).toBeLessThanOrEqual(8);
    }
    s.close();
    const results = await Promise.all(settled);
    for (const r of results) expect(['ok', 'at_error', 'port_lost', 'at_busy']).toContain(r);
  },
);
