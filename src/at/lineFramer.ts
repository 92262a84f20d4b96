/**
 * Bytes from an AT port → lines. EC25 answers are `\r\n<line>\r\n`; echo is `AT...\r` (sometimes
 * `\r\r\n`). Any of `\r` and `\n` ends a line, blank lines are dropped, NUL and other control bytes are
 * removed, and memory is bounded: a line longer than `maxLine` is discarded (reported once as an
 * overflow) instead of growing without end. Pure: no I/O.
 */
export type FramerEvent = { type: 'line'; line: string } | { type: 'overflow'; bytes: number };

export class LineFramer {
  private parts: Buffer[] = [];
  private length = 0;
  private discarding = false;
  private discarded = 0;

  constructor(private readonly maxLine = 4096) {}

  /** Bytes currently held (always <= maxLine). */
  get buffered(): number {
    return this.length;
  }

  push(chunk: Buffer): FramerEvent[] {
    const events: FramerEvent[] = [];
    let start = 0;
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      if (byte !== 0x0d && byte !== 0x0a) continue;
      this.take(chunk.subarray(start, i), events);
      this.endLine(events);
      start = i + 1;
    }
    this.take(chunk.subarray(start), events);
    return events;
  }

  /** Forget a partial line (after a timeout or a reopen). */
  reset(): void {
    this.parts = [];
    this.length = 0;
    this.discarding = false;
    this.discarded = 0;
  }

  private take(bytes: Buffer, events: FramerEvent[]): void {
    if (bytes.length === 0) return;
    if (this.discarding) {
      this.discarded += bytes.length;
      return;
    }
    if (this.length + bytes.length > this.maxLine) {
      this.discarding = true;
      this.discarded = this.length + bytes.length;
      this.parts = [];
      this.length = 0;
      events.push({ type: 'overflow', bytes: this.discarded });
      return;
    }
    this.parts.push(Buffer.from(bytes));
    this.length += bytes.length;
  }

  private endLine(events: FramerEvent[]): void {
    if (this.discarding) {
      this.discarding = false;
      this.discarded = 0;
      return;
    }
    if (this.length === 0) return;
    const raw = Buffer.concat(this.parts, this.length);
    this.parts = [];
    this.length = 0;
    // drop control bytes (NUL, garbage) but keep printable text; latin1 keeps one char per byte
    const line = Buffer.from(raw.filter((b) => b >= 0x20 && b !== 0x7f))
      .toString('latin1')
      .trim();
    if (line.length > 0) events.push({ type: 'line', line });
  }
}
