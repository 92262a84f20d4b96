// A supervisor stand-in whose database is unreachable: it spools N transitions, reports, and waits to be SIGKILLed.
import { JournalWriter, type SpooledTransition } from '../../src/fleet/journalWriter.js';
import { Spool } from '../../src/fleet/spool.js';
import { openSql } from '../../src/store/database.js';
import { appendTransitions } from '../../src/store/journal.js';

const [spoolDir, url, base, modems, rounds] = process.argv.slice(2);
const sql = openSql(url ?? '', { max: 1 });
const writer = new JournalWriter({
  sink: { appendTransitions: (b) => appendTransitions(sql, b) },
  spool: new Spool<SpooledTransition>({ dir: spoolDir ?? '', maxBytes: 10_000_000, fsync: 'always' }),
  retryBaseMs: 60_000,
});
await writer.start();
for (let r = 1; r <= Number(rounds); r++) {
  for (let m = 0; m < Number(modems); m++) {
    writer.append({
      imei: String(Number(base) + m),
      seq: r,
      from: null,
      to: 'online.serving',
      event: `e${r}`,
      at: new Date(),
    });
  }
}
await writer.flush();
process.stdout.write(`${JSON.stringify(writer.stats)}\n`);
setInterval(() => {}, 1000);
