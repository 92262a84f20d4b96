import { fileURLToPath } from 'node:url';
import { ipBatch, ip } from '../../net/ip.js';
import { probeInNamespace } from '../../net/nsProbe.js';
import { run, spawnChild, type Child, type RunResult } from '../../process/run.js';
import { ModemfleetError } from '../../util/errors.js';
import { settlesWithin } from '../../util/time.js';

/**
 * The data-plane lab (root only): a farm namespace where the supervisor's routing and proxies
 * live, a carrier namespace with an HTTP echo server that answers with the client's source address
 * (strict rp_filter, so a packet with the right source on the wrong link goes unanswered), one veth
 * pair per simulated modem standing for its wwan link (`wwanN` in the farm, its data-call addresses
 * in `100.65.N+1.0/24`), and a management link that is the farm's main default route: a leak shows
 * the management address. Everything is removed by `stop()`.
 */
export interface NetLabOptions {
  /** Prefix of the namespace names (letters, digits, dashes; short). */
  name: string;
  modems: number;
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

  constructor(private readonly options: NetLabOptions) {
    if (!NAME.test(options.name)) throw new ModemfleetError('invalid_lab', 'lab name: a-z, 0-9, -');
    if (options.modems < 1 || options.modems > 200)
      throw new ModemfleetError('invalid_lab', 'lab modems: 1-200');
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

  /** The farm namespace's routing, for tests that break it on purpose. */
  farmIp(args: readonly string[]): Promise<string> {
    return ip(args, { netns: this.farm });
  }

  /** SIGKILL every process in the farm namespace: the proxies a killed supervisor left behind. */
  killInFarm(): Promise<void> {
    return killIn(this.farm);
  }

  async stop(): Promise<void> {
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
