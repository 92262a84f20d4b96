import { describe, expect, it, vi } from 'vitest';
import { AtSession } from '../../src/at/atSession.js';
import { classifyLine, commandPrefix, parseFinal } from '../../src/at/classify.js';
import { LineFramer } from '../../src/at/lineFramer.js';
import type { Urc } from '../../src/at/types.js';

const lines = (f: LineFramer, text: string): string[] =>
  f.push(Buffer.from(text, 'latin1')).flatMap((e) => (e.type === 'line' ? [e.line] : []));

describe('line framer', () => {
  it('frames EC25 answers with echo, however split', () => {
    const text = 'AT+CSQ\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n';
    for (let size = 1; size <= text.length; size++) {
      const f = new LineFramer();
      const out: string[] = [];
      for (let i = 0; i < text.length; i += size) out.push(...lines(f, text.slice(i, i + size)));
      expect(out).toEqual(['AT+CSQ', '+CSQ: 21,99', 'OK']);
    }
  });

  it('drops NUL and control bytes and discards over-long lines once, staying bounded', () => {
    const f = new LineFramer(16);
    expect(lines(f, '\x00O\x07K\r\n')).toEqual(['OK']);
    const events = f.push(Buffer.from(`${'x'.repeat(40)}\r\nOK\r\n`));
    expect(events).toEqual([
      { type: 'overflow', bytes: 40 },
      { type: 'line', line: 'OK' },
    ]);
    f.push(Buffer.alloc(10_000, 0x41));
    expect(f.buffered).toBeLessThanOrEqual(16);
  });
});

describe('line classification', () => {
  it('knows finals, echo, prefixed answers and URCs', () => {
    expect(parseFinal('+CME ERROR: 10')).toEqual({ kind: 'cme', code: 10 });
    expect(parseFinal('+CMS ERROR: 500')).toEqual({ kind: 'cms', code: 500 });
    expect(commandPrefix('AT+QENG="servingcell"')).toBe('+QENG');
    expect(commandPrefix('ATI')).toBeUndefined();
    expect(classifyLine('+CPIN: READY', 'AT+CPIN?')).toEqual({ kind: 'answer' });
    expect(classifyLine('+CPIN: READY', 'AT+CSQ')).toEqual({ kind: 'urc' });
    expect(classifyLine('+QIND: "csq",21,99', 'AT+CSQ')).toEqual({ kind: 'urc' });
    expect(classifyLine('RDY', 'ATI')).toEqual({ kind: 'urc' });
    expect(classifyLine('AT+CSQ', 'AT+CSQ')).toEqual({ kind: 'echo' });
    expect(classifyLine('Quectel', 'ATI')).toEqual({ kind: 'answer' });
    expect(classifyLine('OK', undefined)).toEqual({ kind: 'urc' });
  });
});

function session(opts: Partial<ConstructorParameters<typeof AtSession>[0]> = {}) {
  const written: string[] = [];
  const urcs: Urc[] = [];
  const s = new AtSession({
    write: (d) => Promise.resolve(void written.push(d)),
    onUrc: (u) => urcs.push(u),
    ...opts,
  });
  return { s, written, urcs, feed: (t: string) => s.feed(Buffer.from(t, 'latin1')) };
}

describe('AT session', () => {
  it('one command in flight, URCs in mid-answer delivered apart', async () => {
    const { s, written, urcs, feed } = session();
    const a = s.send('AT+CPIN?');
    const b = s.send('AT+CGSN');
    expect(written).toEqual(['AT+CPIN?\r']);
    feed('AT+CPIN?\r\r\n+CPIN: READY\r\n\r\n+QIND: SMS DONE\r\n\r\nOK\r\n');
    expect((await a).lines).toEqual(['+CPIN: READY']);
    expect(urcs.map((u) => u.line)).toEqual(['+QIND: SMS DONE']);
    await Promise.resolve();
    expect(written).toEqual(['AT+CPIN?\r', 'AT+CGSN\r']);
    feed('\r\n866834040000017\r\n\r\nOK\r\n');
    expect((await b).lines).toEqual(['866834040000017']);
  });

  it('an answer to a command never sent does not resolve the next one', async () => {
    vi.useFakeTimers();
    try {
      const { s, feed } = session({ quietMs: 50 });
      feed('\r\nOK\r\n'); // stray: no command in flight
      const a = s.send('AT', { timeoutMs: 100 });
      const timedOut = expect(a).rejects.toMatchObject({ code: 'at_timeout' });
      await vi.advanceTimersByTimeAsync(100);
      await timedOut;
      // the late OK of the timed-out command arrives; the next command waits for silence first
      const b = s.send('AT+CSQ', { timeoutMs: 1000 });
      await vi.advanceTimersByTimeAsync(20);
      feed('\r\nOK\r\n');
      await vi.advanceTimersByTimeAsync(60);
      feed('\r\n+CSQ: 20,99\r\n\r\nOK\r\n');
      expect((await b).lines).toEqual(['+CSQ: 20,99']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('refuses malformed commands and a full queue; close settles everything', async () => {
    const { s } = session({ maxQueue: 2 });
    await expect(s.send('AT\r+CFUN=0')).rejects.toMatchObject({ code: 'at_error' });
    await expect(s.send('rm -rf /')).rejects.toMatchObject({ code: 'at_error' });
    const all = [s.send('AT'), s.send('AT'), s.send('AT'), s.send('AT')].map((p) =>
      p.catch((e: unknown) => (e as { code: string }).code),
    );
    s.close();
    expect(await Promise.all(all)).toEqual(['port_lost', 'port_lost', 'port_lost', 'at_busy']);
    await expect(s.send('AT')).rejects.toMatchObject({ code: 'port_lost' });
  });
});
