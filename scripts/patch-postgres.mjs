// Applies upstream fixes to postgres.js 3.4.9, run by `npm ci` (postinstall). Idempotent (each fix
// carries its mark); fails loudly if the driver's code is not what we patch.
//
// 1. A crash (porsager/postgres#1154, #1208, PR #1209): a small write is deferred with setImmediate;
//    when the connection closes first, nextWrite() calls socket.write on null and throws from the
//    immediate, an uncaught exception that kills the process. Teardown also leaves nextWriteTimer
//    set, so the connection could never flush again.
// 2. COPY that never settles (backup and restore stream their tables with COPY):
//    - `copy ... to stdout`.readable() read slowly: the last CopyData pauses the socket, CopyDone
//      ends the stream, and nothing resumes the socket: the next query on that connection never
//      gets its answer (porsager/postgres#499, PR #1016);
//    - `copy ... from stdin`.writable() rejected by the server after end() (a bad row, a broken
//      constraint): the writable's final callback is never called, so it never finishes nor
//      errors and sql.begin() never rolls back (porsager/postgres#1173, PR #1183).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', 'node_modules', 'postgres');
const WRITE_MARK = '/* modemfleet: guarded nextWrite */';
const COPY_MARK = '/* modemfleet: COPY settles */';
const fixes = [
  {
    mark: WRITE_MARK,
    edits: [
      [
        'function nextWrite(fn) {\n    const x = socket.write(chunk, fn)',
        `function nextWrite(fn) {\n    ${WRITE_MARK}\n    if (!socket) {\n      nextWriteTimer !== null && clearImmediate(nextWriteTimer)\n      chunk = nextWriteTimer = null\n      error(Errors.connection('CONNECTION_CLOSED', options))\n      return false\n    }\n    const x = socket.write(chunk, fn)`,
      ],
      [
        '    clearImmediate(nextWriteTimer)\n    if (socket) {',
        '    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n    if (socket) {',
      ],
      [
        '    clearImmediate(nextWriteTimer)\n    socket.removeListener',
        '    clearImmediate(nextWriteTimer)\n    chunk = nextWriteTimer = null\n    socket.removeListener',
      ],
    ],
  },
  {
    mark: COPY_MARK,
    edits: [
      [
        '  function CopyDone() {\n    stream && stream.push(null)\n    stream = null\n  }',
        `  function CopyDone() {\n    ${COPY_MARK}\n    stream && stream.push(null)\n    stream = null\n    socket && socket.isPaused() && socket.resume()\n  }`,
      ],
      [
        '    stream && (stream.destroy(err), stream = null)\n    query && queryError(query, err)',
        '    stream && (stream.destroy(err), stream = null)\n    final && (final(err), final = null)\n    query && queryError(query, err)',
      ],
    ],
  },
];

for (const file of ['src/connection.js', 'cjs/src/connection.js']) {
  const path = join(root, file);
  let text = readFileSync(path, 'utf8');
  const applied = [];
  for (const { mark, edits } of fixes) {
    if (text.includes(mark)) continue;
    for (const [from, to] of edits) {
      if (text.split(from).length !== 2) {
        console.error(
          `patch-postgres: ${path} does not contain the code this patch expects; check the postgres version`,
        );
        process.exit(1);
      }
      text = text.replace(from, to);
    }
    applied.push(mark);
  }
  if (applied.length === 0) continue;
  writeFileSync(path, text);
  console.log(`patch-postgres: patched ${file} (${applied.join(', ')})`);
}
