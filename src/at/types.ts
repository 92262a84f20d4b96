import { ModemfleetError } from '../util/errors.js';

/** The final result code that ends an AT answer. */
export type FinalResult =
  { kind: 'ok' } | { kind: 'error' } | { kind: 'cme'; code: number } | { kind: 'cms'; code: number };

/** A completed answer: information lines (no echo, no blank lines, no final code, no URCs). */
export interface AtResponse {
  command: string;
  lines: string[];
  final: FinalResult;
}

export interface SendOptions {
  /** Per-command timeout; defaults come from the AT policy (short for queries, 15 s CFUN, 180 s COPS). */
  timeoutMs?: number;
}

/** What the EC25 driver needs from a transport. `send` resolves on OK and rejects with an AtError otherwise. */
export interface AtChannel {
  send(command: string, options?: SendOptions): Promise<AtResponse>;
}

/** An unsolicited result code, delivered separately from answers. */
export interface Urc {
  line: string;
  /** Date.now() when the line was framed. */
  at: number;
}

export type AtErrorCode = 'at_error' | 'at_timeout' | 'port_lost' | 'at_overflow' | 'at_busy';

export class AtError extends ModemfleetError {
  readonly command: string;
  constructor(code: AtErrorCode, command: string, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = 'AtError';
    this.command = command;
  }
}

/** The modem answered ERROR, +CME ERROR: n or +CMS ERROR: n. */
export class AtCommandError extends AtError {
  readonly final: FinalResult;
  readonly lines: string[];
  constructor(command: string, final: FinalResult, lines: string[]) {
    const what =
      final.kind === 'cme'
        ? `+CME ERROR: ${final.code}`
        : final.kind === 'cms'
          ? `+CMS ERROR: ${final.code}`
          : 'ERROR';
    super('at_error', command, `${command} answered ${what}`);
    this.name = 'AtCommandError';
    this.final = final;
    this.lines = lines;
  }
  /** The CME error number, when the answer was +CME ERROR: n. */
  get cme(): number | undefined {
    return this.final.kind === 'cme' ? this.final.code : undefined;
  }
}
