import type { FinalResult } from './types.js';

/** What a line means, given the command in flight. Pure. */
export type LineKind =
  { kind: 'final'; final: FinalResult } | { kind: 'echo' } | { kind: 'answer' } | { kind: 'urc' };

/** URCs without a `+` prefix that the EC25 sends (reference: ec25.md, framing). */
const BARE_URCS = new Set(['RDY', 'POWERED DOWN', 'NORMAL POWER DOWN']);

export function parseFinal(line: string): FinalResult | undefined {
  if (line === 'OK') return { kind: 'ok' };
  if (line === 'ERROR') return { kind: 'error' };
  const cme = /^\+CME ERROR:\s*(\d{1,5})$/.exec(line);
  if (cme) return { kind: 'cme', code: Number(cme[1]) };
  const cms = /^\+CMS ERROR:\s*(\d{1,5})$/.exec(line);
  if (cms) return { kind: 'cms', code: Number(cms[1]) };
  return undefined;
}

/** `AT+CPIN?` → `+CPIN`, `AT+QENG="servingcell"` → `+QENG`, `ATI` → undefined. */
export function commandPrefix(command: string): string | undefined {
  const m = /^AT([+$][A-Z0-9]+)/i.exec(command.trim());
  return m ? m[1]?.toUpperCase() : undefined;
}

export function classifyLine(line: string, inFlight: string | undefined): LineKind {
  const final = parseFinal(line);
  if (final) return inFlight === undefined ? { kind: 'urc' } : { kind: 'final', final };
  if (BARE_URCS.has(line)) return { kind: 'urc' };
  if (inFlight === undefined) return { kind: 'urc' };
  if (line.toUpperCase() === inFlight.trim().toUpperCase()) return { kind: 'echo' };
  const prefixed = /^([+$][A-Z0-9]+):/.exec(line);
  if (prefixed) {
    // a +XXX: (or Qualcomm's $XXX:) line belongs to the answer only when the command in flight is it
    return prefixed[1] === commandPrefix(inFlight) ? { kind: 'answer' } : { kind: 'urc' };
  }
  return { kind: 'answer' };
}
