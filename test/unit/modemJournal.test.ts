import { describe, expect, it } from 'vitest';
import { journalStep, journaledState } from '../../machines/modemJournal.js';

describe('the journal rule', () => {
  it('folds each poll loop into one journaled state', () => {
    expect(journaledState('online.polling')).toBe('online.serving');
    expect(journaledState('online.serving')).toBe('online.serving');
    expect(journaledState('detecting.waiting')).toBe('detecting.probing');
    expect(journaledState('initializing.simWaiting')).toBe('initializing.sim');
    expect(journaledState('initializing.registering.query')).toBe('initializing.registering');
    expect(journaledState('initializing.registering.waiting')).toBe('initializing.registering');
    expect(journaledState('online.rotating.registering.waiting')).toBe('online.rotating.registering');
  });

  it('keeps every lifecycle state as it is', () => {
    for (const state of [
      'initializing.identity',
      'initializing.connecting',
      'online.rotating.detaching',
      'online.rotating.connecting',
      'recovering.backoff',
      'recovering.softResetting',
      'resetting.gone',
      'disabled',
      'error',
      'removed',
    ])
      expect(journaledState(state)).toBe(state);
  });

  it('journals a move only when the journaled state changes', () => {
    const moves = [
      'detecting.probing',
      'detecting.waiting',
      'detecting.probing',
      'initializing.identity',
      'initializing.sim',
      'initializing.registering.query',
      'initializing.registering.waiting',
      'initializing.registering.query',
      'initializing.connecting',
      'online.serving',
      'online.polling',
      'online.serving',
      'online.polling',
      'online.serving',
      'online.rotating.detaching',
    ];
    let last: string | null = null;
    const journaled: string[] = [];
    for (const move of moves) {
      const step = journalStep(last, move);
      if (step === null) continue;
      journaled.push(step);
      last = step;
    }
    expect(journaled).toEqual([
      'detecting.probing',
      'initializing.identity',
      'initializing.sim',
      'initializing.registering',
      'initializing.connecting',
      'online.serving',
      'online.rotating.detaching',
    ]);
  });
});
