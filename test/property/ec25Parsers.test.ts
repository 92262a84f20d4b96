import { fc, test } from '@fast-check/vitest';
import * as parsers from '../../src/ec25/parsers.js';

const fns = Object.entries(parsers).filter(
  ([name, v]) =>
    typeof v === 'function' &&
    name.startsWith('parse') &&
    !['parseRegistrationUrc', 'parseCgev', 'parseText'].includes(name),
) as [string, (lines: string[]) => unknown][];

test.prop(
  [
    fc.array(
      fc.oneof(
        fc.string({ maxLength: 120 }),
        fc.constantFrom('+CSQ: 99,99', '+QCSQ: "LTE"', '+CREG: 9', '+CGPADDR: 1,"', '+QENG: "servingcell",'),
      ),
      { maxLength: 5 },
    ),
  ],
  {
    numRuns: 500,
  },
)('parsers never throw anything but Ec25AnswerError', (lines) => {
  for (const [, fn] of fns) {
    try {
      fn(lines);
    } catch (err) {
      if (!(err instanceof parsers.Ec25AnswerError)) throw err;
    }
  }
  parsers.parseRegistrationUrc(lines[0] ?? '');
  parsers.parseCgev(lines[0] ?? '');
  try {
    parsers.parseText('AT+CGMI', lines);
  } catch (err) {
    if (!(err instanceof parsers.Ec25AnswerError)) throw err;
  }
});
