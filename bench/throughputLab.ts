import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { ModemDataPlane } from '../src/fleet/dataPlane.js';
import { silentLogger } from '../src/log.js';
import { EgressPolicy } from '../src/net/egressPolicy.js';
import { ip, ipBatch } from '../src/net/ip.js';
import { ifbName, readShaping } from '../src/net/shaping.js';
import { TrafficAccounting } from '../src/net/trafficAccounting.js';
import { NO_LIMIT, type PartReading, type TrafficPart } from '../src/net/trafficTable.js';
import { run, spawnChild, type Child } from '../src/process/run.js';
import { NO_ACCESS, type SpeedLimits } from '../src/proxyAccess.js';
import { ECHO_ADDRESS, NetLab } from '../src/sim/lab/netLab.js';
import type { Allocation } from '../src/store/types.js';
import { settlesWithin, sleep } from '../src/util/time.js';
import type { PeerJob, PeerReply, PeerVia } from './throughputPeer.js';

/**
 * The throughput benchmark's lab (root only): the project's NetLab with one modem link (`wwan0` in
 * the farm namespace, a veth to the carrier), the modem's data plane as the supervisor runs it
 * (`ModemDataPlane`: policy routing with the uid rule, microsocks and tinyproxy under the modem's
 * own uid with no capabilities, the egress policy admitting that uid through its link), a customer
 * namespace joined to the farm by a veth (MTU 1500, as a customer's network would be), a sink/source
 * server behind the carrier (bench/throughputPeer.ts), and one client agent in the customer
 * namespace (through the port) and one in the farm (the direct path: a socket bound to the modem's
 * address, which its policy rule sends out of its link).
 *
 * What a configuration switches on the same port, with the same module functions the supervisor
 * uses: the traffic table (`TrafficAccounting`: the table's base, then the modem's part with no
 * quota, as the data plane's traffic gate admits it) and the speed limits (`setAccess` with limits:
 * HTB on the link for the upload, the link's ingress redirected to an ifb with HTB for the download).
 */

export const SINK_PORT = 9_400;
const UID = 61_000;
const FARM_SIDE = '192.168.98.1';
const CUSTOMER = '192.168.98.2';
const peerScript = fileURLToPath(new URL('./throughputPeer.ts', import.meta.url));

/** One long-lived client in a namespace: jobs in, replies out (one JSON line each). */
class PeerAgent {
  private child: Child | undefined;
  private next = 0;
  private readonly waiting = new Map<number, (reply: PeerReply) => void>();

  constructor(private readonly ns: string) {}

  async start(): Promise<void> {
    const child = spawnChild(
      'ip',
      ['netns', 'exec', this.ns, process.execPath, '--import', 'tsx', peerScript, 'agent'],
      { detached: true, cleanup: false, stdin: 'pipe', stdout: 'pipe' },
    );
    this.child = child;
    const lines = createInterface({ input: child.stdout! });
    const ready = new Promise<void>((resolve) =>
      lines.on('line', (line) => {
        if (line === 'ready') return resolve();
        const reply = JSON.parse(line) as PeerReply;
        this.waiting.get(reply.id)?.(reply);
        this.waiting.delete(reply.id);
      }),
    );
    if (!(await settlesWithin(ready, 30_000)))
      throw new Error(`the client agent in ${this.ns} did not start`);
  }

  job(job: Omit<PeerJob, 'id'>): Promise<PeerReply> {
    const id = this.next++;
    return new Promise<PeerReply>((resolve) => {
      this.waiting.set(id, resolve);
      this.child?.stdin?.write(`${JSON.stringify({ ...job, id })}\n`);
    });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child?.pid) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // gone
    }
    await child;
  }
}

export interface LabState {
  accounting: boolean;
  shaping: boolean;
}

export class ThroughputLab {
  readonly net: NetLab;
  readonly customerNs: string;
  readonly allocation: Allocation;
  readonly wanIp: string;
  private dir: string | undefined;
  private sink: Child | undefined;
  private customer: PeerAgent | undefined;
  private farm: PeerAgent | undefined;
  private egress: EgressPolicy | undefined;
  private dataPlane: ModemDataPlane | undefined;
  private accounting: TrafficAccounting | undefined;
  private state: LabState = { accounting: false, shaping: false };
  /** Proxy restarts and failures seen (a measurement with one is not a clean one). */
  readonly problems: string[] = [];

  constructor(private readonly limitKbps: number) {
    const name = `tp${randomBytes(2).toString('hex')}`;
    this.net = new NetLab({ name, modems: 1 });
    this.customerNs = `${name}-cust`;
    this.wanIp = `${this.net.subnet(0)}.2`;
    this.allocation = {
      hostId: 'bench',
      imei: '356938035643809',
      slot: 0,
      httpPort: 20_080,
      socksPort: 21_080,
      routingTable: 10_000,
      ifaceId: 0,
      proxyUser: 'bench',
      proxyPassword: randomBytes(12).toString('hex'),
    };
  }

  get part(): TrafficPart {
    const a = this.allocation;
    return { slot: a.slot, imei: a.imei, httpPort: a.httpPort, socksPort: a.socksPort, uid: UID + a.slot };
  }

  via(kind: 'direct' | 'socks' | 'http'): PeerVia {
    const a = this.allocation;
    return kind === 'direct'
      ? { kind, localAddress: this.wanIp }
      : {
          kind,
          host: FARM_SIDE,
          port: kind === 'socks' ? a.socksPort : a.httpPort,
          user: a.proxyUser,
          password: a.proxyPassword,
        };
  }

  /** The agent that takes this path: the customer's (through the port) or the farm's (direct). */
  job(kind: 'direct' | 'socks' | 'http', job: Omit<PeerJob, 'id' | 'via' | 'target'>): Promise<PeerReply> {
    const agent = kind === 'direct' ? this.farm : this.customer;
    if (!agent) throw new Error('the lab is not started');
    return agent.job({ ...job, via: this.via(kind), target: { host: ECHO_ADDRESS, port: SINK_PORT } });
  }

  async start(): Promise<void> {
    this.dir = await mkdtemp(join(tmpdir(), 'mf-bench-tput-'));
    await chmod(this.dir, 0o711);
    await this.net.start();
    await ip(['netns', 'add', this.customerNs]);
    await ipBatch([
      `link add cust0 netns ${this.net.farm} type veth peer name custc netns ${this.customerNs}`,
    ]);
    await ipBatch([`addr add ${FARM_SIDE}/30 dev cust0`, 'link set cust0 up'], { netns: this.net.farm });
    await ipBatch(['link set lo up', `addr add ${CUSTOMER}/30 dev custc`, 'link set custc up'], {
      netns: this.customerNs,
    });
    this.sink = spawnChild(
      'ip',
      [
        ...['netns', 'exec', this.net.carrier, process.execPath, '--import', 'tsx', peerScript],
        ...['server', ECHO_ADDRESS, String(SINK_PORT)],
      ],
      { detached: true, cleanup: false, stdout: 'pipe' },
    );
    const sinkReady = new Promise<void>((resolve) => this.sink?.stdout?.once('data', () => resolve()));
    if (!(await settlesWithin(sinkReady, 30_000))) throw new Error('the sink server did not start');
    this.customer = new PeerAgent(this.customerNs);
    this.farm = new PeerAgent(this.net.farm);
    await Promise.all([this.customer.start(), this.farm.start()]);

    this.egress = new EgressPolicy({
      uids: { from: UID, to: UID },
      allow: [ECHO_ADDRESS],
      deny: [],
      internet: true,
      netns: this.net.farm,
    });
    await this.egress.start();
    this.dataPlane = new ModemDataPlane(
      {
        netns: this.net.farm,
        backend: 'microsocks+tinyproxy',
        listen: '0.0.0.0',
        prefix: 24,
        runDir: join(this.dir, 'run'),
        dns: [],
        rulePriorityBase: 1_000,
        proxyUidBase: UID,
        egressPolicy: { allow: [ECHO_ADDRESS], deny: [] },
        egressGate: this.egress,
        proxy: { backoffBaseMs: 50, backoffCapMs: 500 },
      },
      this.allocation.imei,
      this.net.iface(0),
      this.allocation,
      this.wanIp,
      {
        onProxyFailed: (detail) => this.problems.push(`proxy failed: ${detail}`),
        onProxyRestart: () => this.problems.push('proxy restarted'),
        onRoutingProblem: (detail) => {
          if (detail) this.problems.push(`routing: ${detail}`);
        },
      },
      silentLogger,
      NO_ACCESS,
    );
    this.dataPlane.start();
    // serving: every path answers (the first attempts meet a proxy still starting)
    const deadline = Date.now() + 60_000;
    for (const kind of ['direct', 'socks', 'http'] as const)
      for (;;) {
        const r = await this.job(kind, { op: 'exchanges', count: 1, up: 10, down: 10 });
        if (r.error === null) break;
        if (Date.now() > deadline) throw new Error(`the ${kind} path does not work: ${r.error}`);
        await sleep(200);
      }
    this.problems.length = 0;
  }

  /** Traffic table and speed limits on or off, as asked (only what changes is touched). */
  async set(state: LabState): Promise<void> {
    if (state.shaping !== this.state.shaping) {
      const limits: SpeedLimits = state.shaping
        ? { downloadKbps: this.limitKbps, uploadKbps: this.limitKbps }
        : { downloadKbps: null, uploadKbps: null };
      await this.dataPlane?.setAccess({ ...NO_ACCESS, limits });
      const read = await readShaping(this.net.iface(0), ifbName(this.allocation.ifaceId), {
        netns: this.net.farm,
      });
      if (read.downloadKbps !== limits.downloadKbps || read.uploadKbps !== limits.uploadKbps)
        throw new Error(`speed limits not in force: ${JSON.stringify(read)}`);
    }
    if (state.accounting !== this.state.accounting) {
      if (state.accounting) {
        // as the supervisor does: the table's base (its probes not counted), then the modem's part
        // with no quota (what the traffic gate admits for a modem without one)
        const accounting = new TrafficAccounting({
          netns: this.net.farm,
          probeUid: process.geteuid?.() ?? 0,
        });
        await accounting.start();
        await accounting.admit(this.part, { limit: NO_LIMIT, closed: false });
        this.accounting = accounting;
      } else {
        await this.accounting?.remove();
        this.accounting = undefined;
      }
    }
    this.state = { ...state };
  }

  /** The port's counters as the kernel has them (null: no traffic table now). */
  async reading(): Promise<PartReading | null> {
    if (!this.accounting) return null;
    return (await this.accounting.read()).parts.get(this.allocation.slot)?.reading ?? null;
  }

  /**
   * Bytes the speed limits' HTB classes have sent so far (their counters start with the qdisc):
   * upload on the link's root, download on the ifb's. Proof that the shaped path was traversed.
   */
  async shapedBytes(): Promise<{ upload: number; download: number }> {
    const sent = async (dev: string): Promise<number> => {
      const r = await run('ip', ['netns', 'exec', this.net.farm, 'tc', '-s', 'class', 'show', 'dev', dev]);
      // `class htb 1:1 root ... \n Sent 123 bytes 45 pkt ...`
      return Number(/class htb 1:1 [^\n]*\n\s*Sent (\d+) bytes/.exec(r.stdout)?.[1] ?? 0);
    };
    return {
      upload: await sent(this.net.iface(0)),
      download: await sent(ifbName(this.allocation.ifaceId)),
    };
  }

  /**
   * Pins the processes on the path to two CPUs (nothing with fewer than two): the client agents on
   * one, the proxies and the sink on the other; `layout` 1 swaps the two CPUs. Unpinned, the
   * scheduler moved these three busy processes between two cores, and where it put them decided
   * more than anything measured: the same port, alone, ran an HTTP transfer at ~55 or at ~110 MB/s
   * from one transfer to the next (BENCHMARKS.md, "Throughput through one port"). Every
   * configuration is measured in the same layout, and the layouts take turns, so neither CPU's own
   * load (interrupts, the benchmark's process) falls on one side. A proxy restarted since is pinned
   * again here. The two CPUs are the first two this process may run on. Returns the CPUs of the
   * agents and of the proxies, or null when not pinned.
   */
  async pin(layout: 0 | 1): Promise<[number, number] | null> {
    // `pid 123's current affinity list: 0-3,8`
    const own = await run('taskset', ['-c', '-p', String(process.pid)]);
    const allowed = (/list:\s*(\S+)/.exec(own.stdout)?.[1] ?? '')
      .split(',')
      .filter(Boolean)
      .flatMap((range) => {
        const [from, to = from] = range.split('-').map(Number);
        return from === undefined || to === undefined || !Number.isInteger(from) || !Number.isInteger(to)
          ? []
          : Array.from({ length: to - from + 1 }, (_, i) => from + i);
      });
    const [a, b] = allowed;
    if (a === undefined || b === undefined) return null;
    const cpus: [number, number] = layout === 0 ? [a, b] : [b, a];
    const set = async (pid: number | undefined, cpu: number): Promise<void> => {
      if (pid === undefined) return;
      // -a: every thread; the proxies' connection threads are made later, with the affinity of
      // the thread that makes them
      const r = await run('taskset', ['-a', '-p', '-c', String(cpu), String(pid)]);
      if (r.exitCode !== 0) throw new Error(`taskset ${pid} to CPU ${cpu}: ${r.stderr.trim()}`);
    };
    await set(this.customer?.pid, cpus[0]);
    await set(this.farm?.pid, cpus[0]);
    await set(this.sink?.pid, cpus[1]);
    for (const pid of this.dataPlane?.pids ?? []) await set(pid, cpus[1]);
    return cpus;
  }

  /**
   * CPU time (user + system, all threads, ms) used so far by the processes on the path: the client
   * agents, the sink and the proxies. The kernel's work for a packet (nftables hooks, qdiscs, the
   * veths' receive) is charged to the process that sends it, except what ksoftirqd takes over.
   */
  async cpuMs(): Promise<number> {
    const pids = [this.customer?.pid, this.farm?.pid, this.sink?.pid, ...(this.dataPlane?.pids ?? [])];
    let ticks = 0;
    for (const pid of pids) {
      if (pid === undefined) continue;
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
      // after the command's closing parenthesis: state is field 3, utime 14, stime 15
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      ticks += Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
    }
    // USER_HZ: 100 on Linux whatever the kernel's HZ
    return ticks * 10;
  }

  /** Everything goes, in reverse order, each step on its own. */
  async stop(): Promise<void> {
    const steps: [string, () => Promise<unknown>][] = [
      ['agents', () => Promise.all([this.customer?.stop(), this.farm?.stop()])],
      ['data plane', async () => this.dataPlane?.stop()],
      ['traffic table', async () => this.accounting?.remove()],
      ['egress policy', async () => this.egress?.stop()],
      [
        'sink',
        async () => {
          if (this.sink?.pid) process.kill(-this.sink.pid, 'SIGKILL');
          await this.sink;
        },
      ],
      ['customer namespace', () => ip(['netns', 'del', this.customerNs])],
      ['lab', () => this.net.stop()],
      ['run dir', async () => this.dir && rm(this.dir, { recursive: true, force: true })],
    ];
    for (const [what, step] of steps)
      try {
        await step();
      } catch (err) {
        console.error(`throughput lab: stopping the ${what} failed: ${(err as Error).message}`);
      }
  }
}
