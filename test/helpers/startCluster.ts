// Starts an embedded cluster and reports its postmaster pid; used to leave an orphan behind (SIGKILL).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EmbeddedCluster } from '../../src/process/embeddedCluster.js';

const [dir, port] = process.argv.slice(2);
const cluster = new EmbeddedCluster({ dir: dir ?? '', port: Number(port) });
await cluster.start();
const pid = Number((await readFile(join(cluster.dataDir, 'postmaster.pid'), 'utf8')).split('\n')[0]);
process.stdout.write(`${JSON.stringify({ pid })}\n`);
setInterval(() => {}, 1000);
