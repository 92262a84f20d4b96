import { fileURLToPath } from 'node:url';
import { ipBatch, ip } from '../../net/ip.js';
import { applyTable, deleteTable } from '../../net/nft.js';
import { directProbeInNamespace, probeInNamespace } from '../../net/nsProbe.js';
import { run, spawnChild, type Child, type RunResult } from '../../process/run.js';
import { ModemfleetError } from '../../util/errors.js';
import { settlesWithin } from '../../util/time.js';
import { CARRIER_NAT_TABLE, carrierNatTable, checkNatPool } from './carrierNat.js';

/**
 * The data-plane lab (root only): a farm namespace where the supervisor's routing and proxies
 * live, a carrier namespace with an HTTP echo server that answers with the client's source address
 * (strict rp_filter, so a packet with the right source on the wrong link goes unanswered), one veth
 * pair per simulated modem standing for its wwan link (`wwanN` in the farm, its data-call addresses
 * in `100.65.N+1.0/24`), and a management link that is the farm's main default route: a leak shows
 * the management address. Everything is removed by `stop()`.
 *
 * With `nat`, the carrier NATs like a mobile carrier (src/sim/lab/carrierNat.ts): the echo server
 * sees an address of the pool, not the modem's own; `setNatPool` changes the pool or turns NAT off
 * (a carrier that gives the modem a public address) while the lab runs.
 */
export interface NetLabOptions {
  /** Prefix of the namespace names (letters, digits, dashes; short). */
  name: string;
  modems: number;
  /** Carrier NAT to this pool of public addresses (e.g. `DEFAULT_NAT_POOL`); default: none. */
  nat?: { pool: readonly string[] } | undefined;
}

export const ECHO_ADDRESS = '198.18.0.1';
export const ECHO_PORT = 8080;
export const MANAGEMENT_ADDRESS = '192.168.77.2';

const NAME = /^[a-z][a-z0-9-]{0,15}$/;
const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));

export class NetLab {
  readonly farm: string;
  readonly carrier: string;
  private echo: Child | undefined;
  private readonly renamed = new Map<number, string>();
  private pool: readonly string[] | null;
  /** The pool whose routes and table are in the carrier namespace now (null: none). */
  private appliedPool: readonly string[] | null = null;
  private started = false;
  private natChange: Promise<void> = Promise.resolve();

  constructor(private readonly options: NetLabOptions) {
    if (!NAME.test(options.name)) throw new ModemfleetError('invalid_lab', 'lab name: a-z, 0-9, -');
    if (options.modems < 1 || options.modems > 200)
      throw new ModemfleetError('invalid_lab', 'lab modems: 1-200');
    this.pool = options.nat ? checkNatPool(options.nat.pool) : null;
    this.farm = `${options.name}-farm`;
    this.carrier = `${options.name}-carrier`;
  }

  /** Modem i's farm-side link: `wwan{i}`, or the name it was renamed to. */
  iface(i: number): string {
    return this.renamed.get(i) ?? `wwan${i}`;
  }

  /** The carrier's end of modem i's link (where the lab's stand-in for qmi_wwan gates traffic). */
  carrierIface(i: number): string {
    return `cr${i}`;
  }

  /** How many modem links the lab has. */
  get modems(): number {
    return this.options.modems;
  }

  /** Modem i of a farm-side interface name (`wwan3` → 3, or a name given by `rename`), else undefined. */
  modemOf(iface: string): number | undefined {
    for (const [i, name] of this.renamed) if (name === iface) return i;
    const m = /^wwan(\d{1,3})$/.exec(iface);
    const i = m ? Number(m[1]) : NaN;
    return Number.isInteger(i) && i < this.options.modems && !this.renamed.has(i) ? i : undefined;
  }

  /**
   * Renames modem i's farm-side link, as udev does (`wwan0` → `wwp0s20u1i4`): the kernel needs it
   * down, so its routes are gone. The fake sysfs must be told too (`FakeSysfs.renameNet`).
   */
  async rename(i: number, name: string): Promise<void> {
    const old = this.iface(i);
    await ipBatch([`link set ${old} down`, `link set ${old} name ${name}`], { netns: this.farm });
    this.renamed.set(i, name);
  }

  /** The /24 a modem's data calls draw from (`SimProfile.subnet`). */
  subnet(i: number): string {
    return `100.65.${i + 1}`;
  }

  get echoUrl(): string {
    return `http://${ECHO_ADDRESS}:${ECHO_PORT}/`;
  }

  /** The carrier's pool of public addresses, or null when it does not NAT. */
  get natPool(): readonly string[] | null {
    return this.pool;
  }

  /** Is this one of the carrier's public addresses (what the echo server sees behind its NAT)? */
  inNatPool(address: string): boolean {
    return this.pool?.includes(address) ?? false;
  }

  /**
   * Changes the carrier's NAT pool while the lab runs (before `start()`: what it starts with).
   * New connections are translated to the new pool at once, each private address by a freshly
   * seeded hash; a pool of one address makes the carrier hand back the same public address to
   * everyone. `null` turns NAT off: the echo server sees the modems' own addresses again.
   */
  async setNatPool(pool: readonly string[] | null): Promise<void> {
    const next = pool === null ? null : checkNatPool(pool);
    this.pool = next;
    this.natChange = this.natChange
      .catch(() => undefined)
      .then(() => (this.started ? this.applyNat(next) : undefined));
    await this.natChange;
  }

  /** Brings the carrier namespace's NAT table and pool routes to `pool` (null: removes them). */
  private async applyNat(pool: readonly string[] | null): Promise<void> {
    const old = this.appliedPool ?? [];
    // answers to a pool address are routed before conntrack translates them back: a local route
    // per pool address, added before the table uses it and removed once it no longer does
    const added = (pool ?? []).filter((a) => !old.includes(a));
    if (added.length)
      await ipBatch(
        added.map((a) => `route replace local ${a}/32 dev lo`),
        { netns: this.carrier },
      );
    if (pool) await applyTable(carrierNatTable(pool, 'cr'), { netns: this.carrier });
    else await deleteTable('ip', CARRIER_NAT_TABLE, { netns: this.carrier });
    this.appliedPool = pool;
    const removed = old.filter((a) => !(pool ?? []).includes(a));
    if (removed.length)
      await ipBatch(
        removed.map((a) => `route del local ${a}/32 dev lo table local`),
        { netns: this.carrier },
      );
  }

  async start(): Promise<void> {
    await this.stop(); // a lab left by a killed run
    await ip(['netns', 'add', this.farm]);
    await ip(['netns', 'add', this.carrier]);
    const links = [
      `link add mgmt0 netns ${this.farm} type veth peer name mgmtc netns ${this.carrier}`,
      ...Array.from(
        { length: this.options.modems },
        (_, i) =>
          `link add ${this.iface(i)} netns ${this.farm} type veth peer name cr${i} netns ${this.carrier}`,
      ),
    ];
    await ipBatch(links);
    await ipBatch(
      [
        'link set lo up',
        `addr add ${ECHO_ADDRESS}/32 dev lo`,
        'addr add 192.168.77.1/30 dev mgmtc',
        'link set mgmtc up',
        ...Array.from({ length: this.options.modems }, (_, i) => [
          `addr add ${this.subnet(i)}.1/24 dev cr${i}`,
          `link set cr${i} up`,
        ]).flat(),
      ],
      { netns: this.carrier },
    );
    await ipBatch(
      [
        'link set lo up',
        `addr add ${MANAGEMENT_ADDRESS}/30 dev mgmt0`,
        'link set mgmt0 up',
        'route add default via 192.168.77.1 dev mgmt0',
        ...Array.from({ length: this.options.modems }, (_, i) => `link set ${this.iface(i)} up`),
      ],
      { netns: this.farm },
    );
    await this.sysctl(this.carrier, 'net.ipv4.conf.all.rp_filter=1');
    await this.sysctl(this.carrier, 'net.ipv4.conf.default.rp_filter=1');
    for (let i = 0; i < this.options.modems; i++)
      await this.sysctl(this.carrier, `net.ipv4.conf.cr${i}.rp_filter=1`);
    this.started = true;
    await this.setNatPool(this.pool);
    this.echo = spawnChild(
      'ip',
      [
        'netns',
        'exec',
        this.carrier,
        process.execPath,
        '--import',
        'tsx',
        here('./echoServer.ts'),
        ECHO_ADDRESS,
        String(ECHO_PORT),
      ],
      { detached: true, cleanup: false, stdout: 'pipe' },
    );
    const ready = new Promise<void>((resolve) => this.echo?.stdout?.once('data', () => resolve()));
    const ok = await settlesWithin(ready, 10_000);
    if (!ok)
      throw new ModemfleetError('lab_failed', 'the echo server did not start in the carrier namespace');
  }

  private async sysctl(ns: string, setting: string): Promise<void> {
    await ip(['netns', 'exec', ns, 'sysctl', '-q', '-w', setting]);
  }

  /** Runs a program inside the farm namespace (tests: the probe). */
  inFarm(argv: readonly string[]): Promise<RunResult> {
    return run('ip', ['netns', 'exec', this.farm, ...argv], { timeoutMs: 15_000 });
  }

  /**
   * What the echo server sees through one proxy port (from inside the farm): the source address,
   * or null when the request fails.
   */
  probe(kind: 'socks' | 'http', port: number, user: string, password: string): Promise<string | null> {
    return probeInNamespace(this.farm, kind, port, user, password, this.echoUrl);
  }

  /**
   * What the echo server sees of a request from inside the farm namespace, from a socket bound to
   * `address` (a modem's address: its policy route sends it out of that modem's link); null when
   * the request fails.
   */
  seenFrom(address: string): Promise<string | null> {
    return directProbeInNamespace(this.farm, address, this.echoUrl);
  }

  /** The farm namespace's routing, for tests that break it on purpose. */
  farmIp(args: readonly string[]): Promise<string> {
    return ip(args, { netns: this.farm });
  }

  /** The carrier namespace's routing, for tests that look at it. */
  carrierIp(args: readonly string[]): Promise<string> {
    return ip(args, { netns: this.carrier });
  }

  /** SIGKILL every process in the farm namespace: the proxies a killed supervisor left behind. */
  killInFarm(): Promise<void> {
    return killIn(this.farm);
  }

  async stop(): Promise<void> {
    this.started = false;
    this.appliedPool = null;
    const echo = this.echo;
    this.echo = undefined;
    if (echo?.pid) {
      try {
        process.kill(-echo.pid, 'SIGKILL');
      } catch {
        // gone
      }
      await echo;
    }
    // what still runs inside would keep a namespace alive, unreachable, after `ip netns del`
    await killIn(this.farm);
    await killIn(this.carrier);
    // deleting a namespace deletes its veths (and their peers)
    await run('ip', ['netns', 'del', this.farm]);
    await run('ip', ['netns', 'del', this.carrier]);
  }
}

async function killIn(ns: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', ns]);
  for (const pid of pids.stdout
    .split('\n')
    .map(Number)
    .filter((p) => p > 0)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}
