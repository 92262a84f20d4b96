// One host of a farm in its own process, for tests that kill it: a supervisor over in-process
// simulated modems (SimLab wire 'memory'), its own host id, sharing the database given.
//   node --import tsx test/helpers/hostProcess.ts URL HOST_ID SEED MODEMS DIR POLICY_JSON
// Prints one JSON line `{"ready":true,"imeis":[...]}` once started, then serves until killed.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { openSql } from '../../src/store/database.js';
import { Store } from '../../src/store/store.js';

const [url = '', hostId = '', seed = '1', count = '1', dir = '', policy = '{}'] = process.argv.slice(2);
const profiles = defaultProfiles(Number(count), Number(seed)).map((p) => ({
  ...p,
  timings: { bootMs: 0, latencyMs: 0, attachMs: 0, resetMs: 100 },
}));
const lab = new SimLab({ dir: join(dir, 'lab'), profiles, wire: 'memory' });
const sql = openSql(url, { max: 4 });
const store = new Store({ sql, url, hostId });
const supervisor = new Supervisor({
  store,
  stateDir: join(dir, 'state'),
  scan: lab.scan,
  hotplug: lab.hotplug(),
  modem: { registrationPollMs: 50, signalPollMs: 30_000, probeRetryMs: 50, detachMs: 100 },
  link: { ...(lab.openPort ? { openPort: lab.openPort } : {}), presencePollMs: 500, addressPollMs: 20 },
  spool: { fsync: 'never' },
  policy: { rotationMinIntervalMs: 200, commandPollMs: 1_000, ...(JSON.parse(policy) as object) },
});
// the simulated hardware starts afresh (a killed run left its tree); the state dir is kept
await rm(join(dir, 'lab'), { recursive: true, force: true });
await lab.start();
await supervisor.start();
process.stdout.write(`${JSON.stringify({ ready: true, imeis: profiles.map((p) => p.imei) })}\n`);
setInterval(() => {}, 60_000);
