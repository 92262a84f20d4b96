import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import {
  BACKUP_FORMAT,
  BackupReader,
  checkBackupSchema,
  copyOrder,
  parseHeader,
  parseTrailer,
  quoteIdent,
  type BackupHeader,
} from '../../src/store/backupFormat.js';
import type { Migration } from '../../src/store/migrate.js';

const sum = (c: string): string => c.repeat(64);
const shipped: Migration[] = ['schema', 'journal', 'webhooks'].map((name, i) => ({
  version: i + 1,
  name,
  file: `000${i + 1}_${name}.sql`,
  sql: '',
  checksum: sum(String(i + 1)),
}));
const header = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  format: BACKUP_FORMAT,
  version: 1,
  createdAt: '2026-11-30T10:00:00.000Z',
  schemaVersion: 2,
  migrations: shipped.slice(0, 2).map(({ version, name, checksum }) => ({ version, name, checksum })),
  server: '18.4',
  tables: [
    { name: 'hosts', columns: ['id', 'name'] },
    { name: 'modems', columns: ['imei', 'host_id'] },
  ],
  sequences: [{ name: 'alerts_id_seq', lastValue: '41' }],
  ...over,
});
const parse = (over: Record<string, unknown> = {}): BackupHeader => parseHeader(JSON.stringify(header(over)));

describe('parseHeader', () => {
  it('takes a header as written', () => {
    expect(parse()).toEqual(header());
  });

  it.each([
    ['not JSON', 'hello', /its first line is not JSON/],
    ['another format', JSON.stringify({ format: 'pg_dump' }), /no format marker/],
    ['a later format version', JSON.stringify(header({ version: 2 })), /format version 2 is not one/],
    ['a count that is not its migrations', JSON.stringify(header({ schemaVersion: 3 })), /schemaVersion/],
    [
      'migrations out of order',
      JSON.stringify(header({ migrations: [{ version: 2, name: 'journal', checksum: sum('2') }] })),
      /bad migration 1/,
    ],
    [
      'a table name that is SQL',
      JSON.stringify(header({ tables: [{ name: 'x"; drop table hosts; --', columns: ['a'] }] })),
      /bad table name/,
    ],
    [
      'a table twice',
      JSON.stringify(
        header({
          tables: [
            { name: 'hosts', columns: ['id'] },
            { name: 'hosts', columns: ['id'] },
          ],
        }),
      ),
      /bad table name/,
    ],
    [
      'a column that is SQL',
      JSON.stringify(header({ tables: [{ name: 'hosts', columns: ['id) to program'] }] })),
      /bad columns of hosts/,
    ],
    [
      'a sequence value that is not a number',
      JSON.stringify(header({ sequences: [{ name: 's', lastValue: '1; select' }] })),
      /bad value of sequence s/,
    ],
  ])('refuses %s (backup_unreadable)', (_what, line, message) => {
    expect(() => parseHeader(line)).toThrow(message);
    expect(() => parseHeader(line)).toThrow(expect.objectContaining({ code: 'backup_unreadable' }));
  });
});

describe('parseTrailer', () => {
  const h = parse();
  it('takes the row count of every table', () => {
    expect(
      parseTrailer(JSON.stringify({ end: BACKUP_FORMAT, rows: { hosts: 1, modems: 0 } }), h).rows,
    ).toEqual({
      hosts: 1,
      modems: 0,
    });
  });
  it.each([
    ['a missing table', { end: BACKUP_FORMAT, rows: { hosts: 1 } }],
    ['an extra table', { end: BACKUP_FORMAT, rows: { hosts: 1, modems: 0, other: 2 } }],
    ['a negative count', { end: BACKUP_FORMAT, rows: { hosts: -1, modems: 0 } }],
    ['no end marker', { rows: { hosts: 1, modems: 0 } }],
  ])('refuses %s (backup_corrupt)', (_what, value) => {
    expect(() => parseTrailer(JSON.stringify(value), h)).toThrow(
      expect.objectContaining({ code: 'backup_corrupt' }),
    );
  });
});

describe('checkBackupSchema', () => {
  const of = (n: number) =>
    shipped.slice(0, n).map(({ version, name, checksum }) => ({ version, name, checksum }));

  it('takes the same or an older schema of the shipped migrations', () => {
    expect(() => checkBackupSchema(of(3), shipped)).not.toThrow();
    expect(() => checkBackupSchema(of(1), shipped)).not.toThrow();
    expect(() => checkBackupSchema([], shipped)).not.toThrow();
  });

  it('a newer backup: upgrade first, naming both versions', () => {
    const newer = [...of(3), { version: 4, name: 'future', checksum: sum('4') }];
    expect(() => checkBackupSchema(newer, shipped)).toThrow(
      expect.objectContaining({
        code: 'backup_schema_newer',
        message:
          "the backup's schema is 0004_future.sql, newer than this modemfleet's (0003_webhooks.sql): upgrade modemfleet first, then restore",
      }),
    );
  });

  it('a migration that differs from ours is named', () => {
    const changed = of(2).map((m) => (m.version === 2 ? { ...m, checksum: sum('f') } : m));
    expect(() => checkBackupSchema(changed, shipped)).toThrow(
      expect.objectContaining({
        code: 'backup_schema_mismatch',
        message: expect.stringMatching(
          /^the backup's migration 0002_journal\.sql .*checksum differs/,
        ) as unknown,
      }),
    );
  });
});

describe('copyOrder', () => {
  it('puts the referenced tables first, by name otherwise; a self-reference is fine', () => {
    expect(
      copyOrder(
        ['webhook_deliveries', 'alerts', 'webhooks', 'modems', 'hosts', 'tree'],
        [
          ['webhook_deliveries', 'webhooks'],
          ['webhook_deliveries', 'alerts'],
          ['modems', 'hosts'],
          ['tree', 'tree'],
          ['alerts', 'elsewhere'],
        ],
      ),
    ).toEqual(['alerts', 'hosts', 'modems', 'tree', 'webhooks', 'webhook_deliveries']);
  });
  it('a cycle is an error', () => {
    expect(() =>
      copyOrder(
        ['a', 'b'],
        [
          ['a', 'b'],
          ['b', 'a'],
        ],
      ),
    ).toThrow(/cycle among a, b/);
  });
});

it('quoteIdent doubles quotes', () => {
  expect(quoteIdent('a"b')).toBe('"a""b"');
});

describe('BackupReader', () => {
  const chunks = (text: string, size: number): Readable => {
    const all = Buffer.from(text);
    const parts: Buffer[] = [];
    for (let i = 0; i < all.length; i += size) parts.push(all.subarray(i, i + size));
    return Readable.from(parts);
  };
  const file = 'HEADER\nr1\tx\nrow two\n\\.\n\\.\nlast\t\\\\.\n\\.\n{"end"}\n';

  it.each([1, 2, 3, 7, 1000])('reads lines and whole rows whatever the chunks (%i bytes)', async (size) => {
    const reader = new BackupReader(chunks(file, size));
    expect((await reader.line(100, 'the header'))?.toString()).toBe('HEADER');
    const tables: string[] = [];
    for (const t of ['a', 'b', 'c']) {
      const got: string[] = [];
      const n = await reader.rows(t, (chunk) => {
        expect(chunk.at(-1)).toBe(0x0a); // only whole rows reach COPY
        got.push(chunk.toString());
        return Promise.resolve();
      });
      tables.push(`${n}:${got.join('')}`);
    }
    expect(tables).toEqual(['2:r1\tx\nrow two\n', '0:', '1:last\t\\\\.\n']);
    expect((await reader.line(100, 'the trailer'))?.toString()).toBe('{"end"}');
    expect(await reader.atEnd()).toBe(true);
    expect(await reader.line(100, 'more')).toBeUndefined();
  });

  it('a file that ends in the rows, in a line, or with a row too long: backup_corrupt', async () => {
    const sink = (): Promise<void> => Promise.resolve();
    await expect(new BackupReader(chunks('r1\nr2\n', 2)).rows('alerts', sink)).rejects.toMatchObject({
      code: 'backup_corrupt',
      message: 'the file ends in the rows of alerts (after 2)',
    });
    await expect(new BackupReader(chunks('HEAD', 2)).line(100, 'the header')).rejects.toMatchObject({
      message: 'the file ends in the middle of the header',
    });
    await expect(new BackupReader(chunks('x'.repeat(50), 8)).rows('modems', sink, 16)).rejects.toMatchObject({
      message: 'a row of modems is longer than 16 bytes',
    });
    await expect(
      new BackupReader(chunks(`${'x'.repeat(50)}\n`, 8)).line(16, 'the header'),
    ).rejects.toMatchObject({
      message: 'the header is longer than 16 bytes',
    });
  });
});
