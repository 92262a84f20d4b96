import { describe, expect, it } from 'vitest';
import { describeDbError, isRetryable } from '../../src/store/pgErrors.js';
import { backoffDelay, rejectAfter } from '../../src/util/time.js';
import { coerceError, errorChain } from '../../src/util/errors.js';
import { exitCodeFor, EXIT } from '../../src/cli/exitCodes.js';
import { ModemfleetError } from '../../src/util/errors.js';

describe('error classification', () => {
  it('retries connection trouble, not bad credentials or SQL errors', () => {
    for (const code of ['ECONNREFUSED', 'CONNECTION_CLOSED', '57P03', '53300', '40001'])
      expect(isRetryable({ code })).toBe(true);
    for (const code of ['28P01', '3D000', '23505', '42P01']) expect(isRetryable({ code })).toBe(false);
    expect(isRetryable(new Error('x'))).toBe(false);
    expect(isRetryable(undefined)).toBe(false);
  });

  it('describes errors on one line', () => {
    expect(
      describeDbError(Object.assign(new Error('boom'), { code: '23505', detail: 'Key (x)=(1) exists.' })),
    ).toBe('boom (23505): Key (x)=(1) exists.');
    expect(coerceError(undefined).message).toMatch(/undefined was thrown/);
    expect(coerceError({ a: 1 }).message).toBe('{"a":1}');
    expect(errorChain(new Error('outer', { cause: new Error('inner') }))).toBe('outer: inner');
  });

  it('maps error codes to exit codes', () => {
    expect(exitCodeFor(new ModemfleetError('database_unreachable', 'x'))).toBe(EXIT.database);
    expect(exitCodeFor(new ModemfleetError('migration_refused', 'x'))).toBe(EXIT.migration);
    expect(exitCodeFor(new Error('x'))).toBe(EXIT.failure);
  });

  it('backoff grows, is capped, and jitter stays within bounds', () => {
    const delays = [0, 1, 2, 3, 4, 5, 10].map((a) => backoffDelay(a, 100, 2000));
    expect(delays).toEqual([100, 200, 400, 800, 1600, 2000, 2000]);
    for (let i = 0; i < 100; i++) {
      const d = backoffDelay(3, 100, 2000, 0.5);
      expect(d).toBeGreaterThanOrEqual(400);
      expect(d).toBeLessThanOrEqual(800);
    }
  });

  it('rejectAfter: the answer in time, its own failure, or the given error once the time is up', async () => {
    await expect(rejectAfter(Promise.resolve(7), 1_000, () => new Error('late'))).resolves.toBe(7);
    await expect(
      rejectAfter(Promise.reject(new Error('own')), 1_000, () => new Error('late')),
    ).rejects.toThrow('own');
    let fail: (err: Error) => void = () => undefined;
    const hung = new Promise<never>((_, reject) => (fail = reject));
    await expect(rejectAfter(hung, 20, () => new Error('late'))).rejects.toThrow('late');
    // the abandoned promise failing afterwards is no unhandled rejection (vitest would report one)
    fail(new Error('after the deadline'));
    await new Promise((r) => setImmediate(r));
  });
});
