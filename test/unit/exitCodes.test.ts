import { describe, expect, it } from 'vitest';
import { EXIT, exitCodeFor } from '../../src/cli/exitCodes.js';
import { STATUS_BY_CODE } from '../../src/inspector/httpErrors.js';
import { ModemfleetError } from '../../src/util/errors.js';

describe('exit codes and HTTP statuses of a farm with several hosts', () => {
  it('a dead host is exit 8 and 409; LISTEN through a transaction pooler is exit 4 (database)', () => {
    expect(exitCodeFor(new ModemfleetError('host_unavailable', 'x'))).toBe(EXIT.hostUnavailable);
    expect(EXIT.hostUnavailable).toBe(8);
    expect(STATUS_BY_CODE['host_unavailable']).toBe(409);
    expect(exitCodeFor(new ModemfleetError('listen_unusable', 'x'))).toBe(4);
    expect(new Set(Object.values(EXIT)).size).toBe(Object.values(EXIT).length);
  });
});

describe('exit codes of backup and restore', () => {
  it('a bad backup file is exit 9; a schema this version cannot restore 5; a running farm 4', () => {
    for (const code of ['backup_unreadable', 'backup_corrupt', 'backup_exists', 'backup_unwritable'])
      expect(exitCodeFor(new ModemfleetError(code, 'x'))).toBe(9);
    for (const code of ['backup_schema_newer', 'backup_schema_mismatch'])
      expect(exitCodeFor(new ModemfleetError(code, 'x'))).toBe(EXIT.migration);
    for (const code of ['farm_running', 'no_cluster'])
      expect(exitCodeFor(new ModemfleetError(code, 'x'))).toBe(EXIT.database);
  });
});
