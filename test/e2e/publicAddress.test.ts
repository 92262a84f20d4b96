import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Supervisor } from '../../src/fleet/supervisor.js';
import { directInNamespace } from '../../src/net/nsProbe.js';
import { run } from '../../src/process/run.js';
import { DEFAULT_NAT_POOL } from '../../src/sim/lab/carrierNat.js';
import { LabWwan } from '../../src/sim/lab/labWwan.js';
import { MANAGEMENT_ADDRESS, NetLab } from '../../src/sim/lab/netLab.js';
import { defaultProfiles } from '../../src/sim/profiles.js';
import { SimLab } from '../../src/sim/simLab.js';
import { Store } from '../../src/store/store.js';
import { FAST_MODEM, labSupervisor } from '../helpers/farm.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { labDataPlane, labEgress } from '../helpers/labDataPlane.js';
import { until } from '../helpers/until.js';

/**
 * The public address behind carrier NAT, end to end as root: the lab's carrier SNATs the modems'
 * private addresses to a pool of public ones (two modems may share one), as mobile carriers do.
 * Every modem stays online through the egress checks; `publicIp` is what the echo server sees
 * through each port; a port forced out through the host's own uplink fails closed; a rotation that
 * gets the same public address back is retried and fails `same_public_ip`; a normal one is `done`
 * with a new public address.
 */

const N = 3;
let db: TestDatabase;
let dir: string;
let net: NetLab;
let lab: SimLab;
let wwan: LabWwan;
let supervisor: Supervisor;

const modems = () =>
  db.sql<
    {
      imei: string;
      state: string;
      reason: string | null;
      wan_ip: string | null;
      public_ip: string | null;
      slot: number;
      socks_port: number;
      proxy_user: string;
      proxy_password: string;
    }[]
  >`select m.imei, m.state, m.reason, host(m.wan_ip) as wan_ip, host(m.public_ip) as public_ip, a.slot,
      a.socks_port, a.proxy_user, a.proxy_password
    from modems m join allocations a using (imei) order by m.imei`;

const seen = (m: { socks_port: number; proxy_user: string; proxy_password: string }) =>
  net.probe('socks', m.socks_port, m.proxy_user, m.proxy_password);

async function rotate(imei: string): Promise<{ status: string; result: Record<string, unknown> }> {
  const [row] = await db.sql<{ id: string }[]>`
    insert into modem_commands (imei, kind, requested_by) values (${imei}, 'rotate', 'e2e') returning id`;
  const id = Number(row?.id);
  let done: { status: string; result: Record<string, unknown> } | undefined;
  await until(
    async () => {
      [done] = await db.sql<{ status: string; result: Record<string, unknown> }[]>`
        select status, result from modem_commands where id = ${id} and status in ('done', 'failed')`;
      return done !== undefined;
    },
    60_000,
    `rotation ${id} finished`,
  );
  return done!;
}

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), 'mf-pub-'));
  await chmod(dir, 0o711);
  net = new NetLab({
    name: `mp${randomBytes(2).toString('hex')}`,
    modems: N,
    nat: { pool: DEFAULT_NAT_POOL },
  });
  await net.start();
  lab = new SimLab({
    dir: join(dir, 'lab'),
    profiles: defaultProfiles(N, 81).map((p, i) => ({ ...p, subnet: net.subnet(i) })),
  });
  await lab.start();
  wwan = new LabWwan(net, lab);
  await wwan.start();
  supervisor = new Supervisor(
    labSupervisor(new Store({ sql: db.sql, url: db.url, hostId: 'pub-host' }), lab, join(dir, 'state'), {
      modem: { ...FAST_MODEM, signalPollMs: 2_000, rotationAttempts: 3 },
      noReuse: { hours: 1, scope: 'modem' },
      link: { presencePollMs: 100, addressPollMs: 50, wwan },
      policy: {
        commandPollMs: 500,
        rotationVerifyMs: 20_000,
        rotationScheduleMinSeconds: 1,
        rotationSchedulePollMs: 500,
      },
      dataPlane: labDataPlane(net, join(dir, 'run'), {
        prefix: 32,
        proxyUidBase: undefined,
        egress: labEgress(net, 1_000, { url: undefined, urls: [net.echoUrl] }),
      }),
    }),
  );
  await supervisor.start();
}, 60_000);

afterAll(async () => {
  await supervisor?.stop();
  await wwan?.stop();
  await lab?.stop();
  await net?.stop();
  await db?.drop();
  await rm(dir, { recursive: true, force: true });
});

describe('the public address behind carrier NAT', () => {
  it('every modem stays online through the checks; publicIp is what the echo server sees through its port', async () => {
    await until(
      async () => (await modems()).filter((m) => m.state === 'online' && m.public_ip !== null).length === N,
      60_000,
      'every modem online with a public address',
    );
    // several egress checks (1 s apart): behind NAT no modem is taken for a leak
    await new Promise((r) => setTimeout(r, 5_000));
    for (const m of await modems()) {
      expect(m.state).toBe('online');
      expect(DEFAULT_NAT_POOL).toContain(m.public_ip);
      expect(m.public_ip).not.toBe(m.wan_ip);
      expect(await seen(m)).toBe(m.public_ip);
    }
    const [first] = await modems();
    const history = await new Store({ sql: db.sql, url: db.url, hostId: 'reader' }).addresses(first!.imei);
    expect(history[0]).toMatchObject({ publicIp: first!.public_ip, privateIp: first!.wan_ip });
    expect(history[0]!.timesSeen).toBeGreaterThan(1);
  }, 90_000);

  it('the carrier hands back the same public address: retried, then failed same_public_ip, still online', async () => {
    const m = (await modems())[0]!;
    await net.setNatPool([m.public_ip!]);
    const { status, result } = await rotate(m.imei);
    expect(status).toBe('failed');
    expect(result).toMatchObject({
      error: 'same_public_ip',
      publicIp: m.public_ip,
      previousPublicIp: m.public_ip,
    });
    expect(Number(result['attempts'])).toBeGreaterThanOrEqual(3);
    // metrics count it by result (never with an address in a label)
    expect(supervisor.status().rotations).toMatchObject({ same_public_ip: 1 });
    await until(async () => (await modems())[0]?.state === 'online', 10_000, 'still online');
  }, 120_000);

  it('a normal rotation is done with a new public address', async () => {
    await net.setNatPool(Array.from({ length: 20 }, (_, i) => `203.0.113.${100 + i}`));
    // the modem sees the new pool at its next check
    const m0 = (await modems())[1]!;
    await until(async () => (await modems())[1]?.public_ip !== m0.public_ip, 15_000, 'new pool seen');
    const m = (await modems())[1]!;
    const { status, result } = await rotate(m.imei);
    expect(status).toBe('done');
    expect(result).toMatchObject({
      previousPublicIp: m.public_ip,
      previousIp: m.wan_ip,
      verifiedThroughPort: true,
    });
    expect(result['publicIp']).not.toBe(m.public_ip);
    expect(supervisor.status().rotations).toMatchObject({ done: 1, same_public_ip: 1 });
    expect(result['wanIp']).not.toBe(m.wan_ip);
    await until(async () => (await modems())[1]?.public_ip === result['publicIp'], 10_000, 'row updated');
    // what the rotations gave: one done (the same_public_ip one failed), a new address, no reuse
    const reader = new Store({ sql: db.sql, url: db.url, hostId: 'reader' });
    const stats = await reader.addressStats(m.imei);
    expect(stats['24h']).toMatchObject({ rotations: 1, reuseRate: 0 });
    expect(stats['24h'].distinctAddresses).toBeGreaterThanOrEqual(2);
    expect(stats['24h'].distinctNetworks).toBe(1);
    expect(stats['7d'].rotations).toBe(1);
    const farm = await reader.addressStats(null);
    expect(farm['24h'].rotations).toBe(1);
    expect(farm['24h'].distinctAddresses).toBeGreaterThanOrEqual(3);
  }, 120_000);

  it('no reuse within an hour: a carrier that only hands back addresses the modem had fails the rotation', async () => {
    const m = (await modems())[1]!;
    const reader = new Store({ sql: db.sql, url: db.url, hostId: 'reader' });
    const had = [...new Set((await reader.addresses(m.imei)).map((a) => a.publicIp))].slice(0, 2);
    expect(had).toHaveLength(2);
    // whatever the carrier hands out now, the modem had it within the hour: the one right before
    // (same_public_ip) or an older one (reused_public_ip); without the rule, most runs would pass
    await net.setNatPool(had);
    await until(async () => had.includes((await modems())[1]?.public_ip ?? ''), 15_000, 'the pool seen');
    const { status, result } = await rotate(m.imei);
    expect(status).toBe('failed');
    expect(['same_public_ip', 'reused_public_ip']).toContain(result['error']);
    expect(had).toContain(result['publicIp']);
    expect(Number(result['attempts'])).toBeGreaterThanOrEqual(3);
    await until(async () => (await modems())[1]?.state === 'online', 10_000, 'still online');
    await net.setNatPool(Array.from({ length: 20 }, (_, i) => `203.0.113.${100 + i}`));
  }, 120_000);

  it('a schedule of 3 short intervals rotates the modem 3 times', async () => {
    const m = (await modems())[0]!;
    // the test's floor for schedules (production: 60 s)
    const reader = new Store({ sql: db.sql, url: db.url, hostId: 'reader', scheduleMinSeconds: 1 });
    await reader.setSchedule(m.imei, { intervalSeconds: 3, jitterSeconds: 0 }, 'e2e');
    await until(
      async () =>
        (
          await db.sql`select 1 from modem_commands
            where imei = ${m.imei} and requested_by = 'schedule' and status in ('done', 'failed')`
        ).length >= 3,
      45_000,
      'three scheduled rotations',
    );
    await reader.deleteSchedule(m.imei);
    const rows = await db.sql<{ status: string; result: { error?: string } }[]>`
      select status, result from modem_commands where imei = ${m.imei} and requested_by = 'schedule' order by id`;
    // each one carried out (done, or the carrier handed back an address the modem had)
    for (const r of rows.slice(0, 3)) expect(['done', 'failed']).toContain(r.status);
    const carrierSaidNo = ['same_public_ip', 'reused_public_ip'];
    expect(
      rows.slice(0, 3).every((r) => r.status === 'done' || carrierSaidNo.includes(r.result.error ?? '')),
    ).toBe(true);
  }, 90_000);

  it('a port forced out through the host uplink shows the host address: it fails closed', async () => {
    const m = (await modems())[2]!;
    // the modem's traffic goes to the main table (the management uplink), NATed there like a host's
    await net.farmIp(['rule', 'add', 'priority', '5', 'from', m.wan_ip!, 'lookup', 'main']);
    const nft = await run('ip', ['netns', 'exec', net.farm, 'nft', '-f', '-'], {
      input:
        'table ip leak {\n chain post {\n  type nat hook postrouting priority 100;\n  oifname "mgmt0" masquerade\n }\n}\n',
      timeoutMs: 5_000,
    });
    expect(nft.exitCode).toBe(0);
    await until(
      async () => {
        const now = (await modems())[2]!;
        return now.state === 'error' && now.reason === 'egress_mismatch';
      },
      {
        timeoutMs: 30_000,
        message: async () =>
          `the leaking modem in error (egress_mismatch); it is ${JSON.stringify((await modems())[2])}, its port shows ${await seen(m)}, the host ${await directInNamespace(net.farm, net.echoUrl)}`,
      },
    );
    // the alert goes through the alert queue, its own write after the transition's
    let alert: { message: string } | undefined;
    await until(
      async () => {
        [alert] = await db.sql<{ message: string }[]>`
          select message from alerts where imei = ${m.imei} and kind = 'egress_mismatch'`;
        return alert !== undefined;
      },
      10_000,
      'the egress_mismatch alert stored',
    );
    expect(alert?.message).toContain(MANAGEMENT_ADDRESS);
    // the others keep serving
    for (const other of (await modems()).slice(0, 2)) expect(other.state).toBe('online');
  }, 60_000);
});
