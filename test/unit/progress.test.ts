import { describe, expect, it } from 'vitest';
import { modemsLine, terminalProgress } from '../../src/util/progress.js';

const stream = (isTTY: boolean) => {
  const written: string[] = [];
  return { isTTY, written, write: (text: string) => written.push(text) };
};

describe('progress on a terminal', () => {
  it('one line per step on a terminal, a repeat says nothing; nothing elsewhere or when turned off', () => {
    const tty = stream(true);
    const progress = terminalProgress(tty, {});
    progress('starting the embedded PostgreSQL');
    progress('1 of 2 modems online');
    progress('1 of 2 modems online');
    progress('2 of 2 modems online');
    expect(tty.written).toEqual([
      'modemfleet: starting the embedded PostgreSQL\n',
      'modemfleet: 1 of 2 modems online\n',
      'modemfleet: 2 of 2 modems online\n',
    ]);
    const pipe = stream(false);
    terminalProgress(pipe, {})('starting');
    const off = stream(true);
    terminalProgress(off, { MODEMFLEET_PROGRESS: '0' })('starting');
    expect([...pipe.written, ...off.written]).toEqual([]);
  });

  it('says where the modems are', () => {
    expect(modemsLine({ online: 3, error: 1 })).toBe('3 of 4 modems online (1 error)');
    expect(modemsLine({ initializing: 1 })).toBe('0 of 1 modem online (1 initializing)');
    expect(modemsLine({ online: 2, recovering: 0, detecting: 1, error: 1 })).toBe(
      '2 of 4 modems online (1 detecting, 1 error)',
    );
  });
});
