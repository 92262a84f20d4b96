import { classifyLine } from './classify.js';
import { LineFramer } from './lineFramer.js';
import {
  AtCommandError,
  AtError,
  type AtChannel,
  type AtResponse,
  type SendOptions,
  type Urc,
} from './types.js';

export interface AtSessionOptions {
  /** Writes bytes to the port; a rejection means the port is gone. */
  write: (data: string) => Promise<void>;
  onUrc?: (urc: Urc) => void;
  /** Called once when the session closes (port lost, too many timeouts, or close()). */
  onClose?: (reason: AtError) => void;
  /** Called for discarded over-long lines. */
  onOverflow?: (bytes: number) => void;
  defaultTimeoutMs?: number;
  /** Consecutive timeouts after which the port counts as lost (ModemManager: 10). */
  maxConsecutiveTimeouts?: number;
  maxQueue?: number;
  maxLine?: number;
  /** Lines of one answer kept at most (a runaway answer is cut, then times out). */
  maxAnswerLines?: number;
  /** After a timeout, wait for this much silence before the next command (a late answer drains). */
  quietMs?: number;
}

interface Pending {
  command: string;
  timeoutMs: number;
  resolve: (r: AtResponse) => void;
  reject: (e: AtError) => void;
}

const MAX_COMMAND = 512;

/**
 * One AT conversation, independent of the port: one command in flight, a bounded FIFO queue,
 * per-command timeouts, echo tolerated, URCs separated from answers (also in mid-answer), and every
 * pending command settled when the session closes. The transport feeds it bytes.
 */
export class AtSession implements AtChannel {
  private readonly framer: LineFramer;
  private readonly queue: Pending[] = [];
  private current: (Pending & { lines: string[]; timer: NodeJS.Timeout }) | undefined;
  private closedWith: AtError | undefined;
  private consecutiveTimeouts = 0;
  private lastInputAt = 0;
  private needQuiet = false;
  private quietTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: AtSessionOptions) {
    this.framer = new LineFramer(options.maxLine ?? 4096);
  }

  get closed(): boolean {
    return this.closedWith !== undefined;
  }

  /** Bytes held in the framer plus queued commands: what this session keeps in memory. */
  get load(): { bufferedBytes: number; queued: number; inFlight: boolean } {
    return {
      bufferedBytes: this.framer.buffered,
      queued: this.queue.length,
      inFlight: this.current !== undefined,
    };
  }

  send(command: string, options: SendOptions = {}): Promise<AtResponse> {
    if (this.closedWith)
      return Promise.reject(new AtError('port_lost', command, `${command}: the AT port is closed`));
    if (
      command.length > MAX_COMMAND ||
      /[\r\n]/.test(command) ||
      command.includes('\u0000') ||
      !/^AT/i.test(command)
    ) {
      return Promise.reject(new AtError('at_error', command.slice(0, 40), 'refusing a malformed AT command'));
    }
    if (this.queue.length >= (this.options.maxQueue ?? 32)) {
      return Promise.reject(new AtError('at_busy', command, `${command}: the AT queue is full`));
    }
    return new Promise<AtResponse>((resolve, reject) => {
      this.queue.push({
        command,
        timeoutMs: options.timeoutMs ?? this.options.defaultTimeoutMs ?? 5_000,
        resolve,
        reject,
      });
      this.next();
    });
  }

  /** Bytes from the port. Never throws. */
  feed(chunk: Buffer): void {
    if (this.closedWith) return;
    this.lastInputAt = Date.now();
    for (const event of this.framer.push(chunk)) {
      if (event.type === 'overflow') {
        this.options.onOverflow?.(event.bytes);
        continue;
      }
      this.onLine(event.line);
    }
  }

  /** Close: every queued and in-flight command is rejected with `reason`. Idempotent. */
  close(reason: AtError = new AtError('port_lost', '', 'the AT port was closed')): void {
    if (this.closedWith) return;
    this.closedWith = reason;
    clearTimeout(this.quietTimer);
    const all = [...(this.current ? [this.current] : []), ...this.queue.splice(0)];
    if (this.current) clearTimeout(this.current.timer);
    this.current = undefined;
    for (const p of all)
      p.reject(new AtError('port_lost', p.command, `${p.command}: ${reason.message}`, { cause: reason }));
    this.options.onClose?.(reason);
  }

  private onLine(line: string): void {
    const current = this.current;
    const kind = classifyLine(line, current?.command);
    switch (kind.kind) {
      case 'urc':
        this.options.onUrc?.({ line, at: Date.now() });
        return;
      case 'echo':
        return;
      case 'answer':
        if (current && current.lines.length < (this.options.maxAnswerLines ?? 64)) current.lines.push(line);
        return;
      case 'final': {
        if (!current) return;
        clearTimeout(current.timer);
        this.current = undefined;
        this.consecutiveTimeouts = 0;
        if (kind.final.kind === 'ok')
          current.resolve({ command: current.command, lines: current.lines, final: kind.final });
        else current.reject(new AtCommandError(current.command, kind.final, current.lines));
        this.next();
        return;
      }
    }
  }

  private next(): void {
    if (this.current || this.closedWith || this.quietTimer) return;
    const pending = this.queue.shift();
    if (!pending) return;
    if (this.needQuiet) {
      // a late answer to the command that timed out must not be taken for this one's
      const quiet = this.options.quietMs ?? 100;
      const silentFor = Date.now() - this.lastInputAt;
      if (silentFor < quiet) {
        this.queue.unshift(pending);
        this.quietTimer = setTimeout(() => {
          this.quietTimer = undefined;
          this.next();
        }, quiet - silentFor);
        return;
      }
      this.needQuiet = false;
      this.framer.reset();
    }
    const timer = setTimeout(() => this.onTimeout(), pending.timeoutMs);
    this.current = { ...pending, lines: [], timer };
    this.options.write(`${pending.command}\r`).catch((err: unknown) => {
      this.close(
        new AtError('port_lost', pending.command, `write failed: ${(err as Error)?.message ?? 'unknown'}`, {
          cause: err,
        }),
      );
    });
  }

  private onTimeout(): void {
    const current = this.current;
    if (!current) return;
    this.current = undefined;
    this.needQuiet = true;
    this.lastInputAt = Date.now(); // the silence that lets a late answer drain is counted from here
    this.consecutiveTimeouts++;
    current.reject(
      new AtError(
        'at_timeout',
        current.command,
        `${current.command}: no answer within ${current.timeoutMs} ms`,
      ),
    );
    const max = this.options.maxConsecutiveTimeouts ?? 10;
    if (this.consecutiveTimeouts >= max) {
      this.close(
        new AtError('port_lost', current.command, `${max} consecutive AT timeouts: the port is lost`),
      );
      return;
    }
    this.next();
  }
}
