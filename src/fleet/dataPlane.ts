import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { proxyMachine, type ProxyConfig } from '../../machines/proxyMachine.js';
import { routingMachine, type RoutingConfig } from '../../machines/routingMachine.js';
import type { Logger } from '../log.js';
import { applyAccessList, removeAccessList } from '../net/accessList.js';
import type { LeftModem } from '../net/leftProxies.js';
import {
  microsocksArgs,
  openMicrosocksArgs,
  render3proxy,
  renderOpenTinyproxy,
  renderTinyproxy,
  type ProxySpec,
} from '../net/proxyConfig.js';
import { ProxyProcess } from '../net/proxyProcess.js';
import { listening, processAlive, proxyFingerprint, type ProxyRecordMeta } from '../net/proxyRecord.js';
import { applyRoute, removeRoute, verifyRoute, type ModemRoute } from '../net/routing.js';
import { applyShaping, ifbName, removeShaping } from '../net/shaping.js';
import { NO_ACCESS, liveLogins, nextExpiry, type ProxyAccess, type SpeedLimits } from '../proxyAccess.js';
import type { Allocation } from '../store/types.js';
import { ModemfleetError, coerceError } from '../util/errors.js';
import type { TrafficGate } from './trafficMonitor.js';

export type ProxyBackend = '3proxy' | 'microsocks+tinyproxy';

export interface DataPlaneOptions {
  /** Network namespace of the modem links, routing and proxies; unset: the supervisor's own. */
  netns?: string | undefined;
  backend: ProxyBackend;
  /** The 3proxy binary (MODEMFLEET_3PROXY, else `3proxy` from PATH). */
  threeProxyPath?: string | undefined;
  /** Where the proxy ports listen. */
  listen: string;
  /** Prefix of the modem address put on its link (32 for raw-ip QMI links). */
  prefix: number;
  /** Pid files and rendered configs. */
  runDir: string;
  dns: string[];
  /** Rule priority of slot n: base + 2n (the uidrange rule takes the next one). */
  rulePriorityBase: number;
  /**
   * DNS leak guard: the proxy of slot n runs as uid/gid base + n, and a `uidrange` rule sends that
   * uid's own traffic (its DNS queries) into the modem's table. Unset: off (proxies run as we do).
   */
  proxyUidBase?: number | undefined;
  /**
   * The kernel's egress policy for the proxy uids (src/net/egressPolicy.ts; needs `proxyUidBase`):
   * `allow` (reached before any refusal: exceptions, the simulated internet of the demo and the
   * lab), `deny` (refused besides the special-purpose blocks), `internet: false` (only `allow`).
   * Default: on, nothing allowed beyond the internet; null: off.
   */
  egressPolicy?: { allow: readonly string[]; deny: readonly string[]; internet?: boolean } | null | undefined;
  /** Set by the Supervisor: admits a modem's uid through its own link before its proxy starts. */
  egressGate?: EgressGate | undefined;
  /** Set by the Supervisor: the modem's traffic counters and quota exist before its proxy starts. */
  trafficGate?: TrafficGate | undefined;
  /**
   * Policy routing per modem (default on). Off only where every modem address is local and needs
   * no route, as in the demo's loopback addresses.
   */
  routing?: boolean | undefined;
  /** Restart backoff and intensity of the proxies (DEFAULT_PROXY_CONFIG otherwise). */
  proxy?: Partial<Omit<ProxyConfig, 'canReload'>> | undefined;
  /** Retry backoff and read-back interval of the routing (DEFAULT_ROUTING_CONFIG otherwise). */
  routingConfig?: Partial<RoutingConfig> | undefined;
  /** The `ip` program and its timeout per call (default `ip` from PATH, 5 s). */
  ip?: { bin?: string; timeoutMs?: number } | undefined;
  /**
   * microsocks+tinyproxy with an allowlist: the password-less companions listen on the modem's
   * ports plus this offset (default 2000), reached through the kernel's redirect (src/net/accessList.ts).
   */
  openPortOffset?: number | undefined;
  /** How often an adopted proxy (not our child) is checked for life (default 1 s). */
  adoptedPollMs?: number | undefined;
}

/**
 * A modem's proxy a previous run left serving (src/fleet/handover.ts), claimed by its data plane:
 * adopted when it is what this run would start, else killed before anything starts.
 */
export interface LeftProxy {
  readonly modem: LeftModem;
  /** The previous run's admission of its uid is not needed any more (this data plane admitted it). */
  release(): Promise<void>;
  /** Not adopted: its processes are stopped, their pid files removed, its admission released. */
  kill(reason: string): Promise<void>;
}

/** One process this data plane starts: what `ProxyProcess` is given beyond the common options. */
interface PlannedProcess {
  name: string;
  argv: [string, ...string[]];
  ports: { host: string; port: number }[];
  secrets?: string[];
  reloads?: boolean;
  reloadSettleMs?: number;
  reloadLog?: { done: string; failed: string };
}

/** What this data plane would start: the processes, and the record the next run compares with. */
interface ProxyPlan {
  processes: PlannedProcess[];
  meta: ProxyRecordMeta;
}

/** Where a modem's speed limits are enforced: its own link (kernel), 3proxy's bandlim, or nowhere. */
export type ShapingPlace = 'kernel' | '3proxy' | 'none';

/** What a data plane needs of the host's egress policy (`EgressPolicy`). */
export interface EgressGate {
  admit(uid: number, link: string): Promise<void>;
  release(uid: number, link: string): Promise<void>;
}

export interface DataPlaneHooks {
  /** The proxy gave up (restart intensity): the modem goes to `error`. */
  onProxyFailed: (detail: string) => void;
  /** A proxy process exited or did not start: it is restarted (within restart intensity). */
  onProxyRestart: () => void;
  /** Routing is not as it should be (being retried). */
  onRoutingProblem: (detail: string | null) => void;
}

/**
 * One modem's data plane under rest_for_one: the routing actor first, then the proxy actor, started
 * once the routing is applied and verified; a new address goes to both (routing drops the old one,
 * the proxy reloads or restarts); stopping goes in reverse order (proxy, then routing).
 */
export class ModemDataPlane {
  private routing: Actor<typeof routingMachine> | undefined;
  private proxy: Actor<typeof proxyMachine> | undefined;
  private processes: ProxyProcess[] = [];
  private address: string;
  private stopped = false;
  /**
   * A start of the proxy processes in flight: a full stop waits for it (the proxy machine's stop
   * does not), then stops what it started or adopted, so none outlives the supervisor.
   */
  private starting: Promise<void> | undefined;
  /** Handed over to the next run: what runs stays running. */
  private handedOver = false;
  private admitted = false;
  private access: ProxyAccess;
  /** What the link's qdiscs and the allowlist table hold now (null: nothing applied yet). */
  private shaped: SpeedLimits | null = null;
  private accessListed = false;
  /**
   * The link comes from a previous run with a proxy left on it: its limits and allowlist table are
   * whatever that run applied, so the first apply sets them whatever this one believes.
   */
  private inheritedLink = false;
  /** What each config file holds (written by us, read by the proxy). */
  private readonly written = new Map<string, string>();
  private expiryTimer: NodeJS.Timeout | undefined;
  /** Access changes one at a time, in order. */
  private accessChange: Promise<void> = Promise.resolve();
  private readonly log: Logger;

  constructor(
    private readonly options: DataPlaneOptions,
    readonly imei: string,
    private readonly iface: string,
    private allocation: Allocation,
    address: string,
    private readonly hooks: DataPlaneHooks,
    log: Logger,
    access: ProxyAccess = NO_ACCESS,
    /** The proxy a previous run left for this modem, and when its routing may be touched. */
    private left?: { proxy: LeftProxy | undefined; settled: Promise<void> },
  ) {
    this.access = access;
    this.address = address;
    this.log = log.child({ component: 'dataplane' });
    if (left?.proxy) {
      this.inheritedLink = true;
      this.accessListed = true;
    }
  }

  /** The proxy's ports and credentials (what a customer uses). */
  get endpoint(): { httpPort: number; socksPort: number; user: string; password: string } {
    return {
      httpPort: this.allocation.httpPort,
      socksPort: this.allocation.socksPort,
      user: this.allocation.proxyUser,
      password: this.allocation.proxyPassword,
    };
  }

  private route(address: string): ModemRoute {
    return {
      iface: this.iface,
      address,
      prefix: this.options.prefix,
      gateway: null,
      table: this.allocation.routingTable,
      priority: this.options.rulePriorityBase + 2 * this.allocation.slot,
      uid: this.uid,
    };
  }

  private get uid(): number | undefined {
    return this.options.proxyUidBase === undefined
      ? undefined
      : this.options.proxyUidBase + this.allocation.slot;
  }

  private spec(egress: string): ProxySpec {
    return {
      imei: this.imei,
      listen: this.options.listen,
      httpPort: this.allocation.httpPort,
      socksPort: this.allocation.socksPort,
      user: this.allocation.proxyUser,
      password: this.allocation.proxyPassword,
      egress,
      dns: this.options.dns,
      ...(this.options.egressPolicy ? { egressPolicy: this.options.egressPolicy } : {}),
      // microsocks serves the modem's own login only: the others are HTTP ones there
      logins: liveLogins(this.access, Date.now())
        .map((l) => ({
          user: l.username,
          password: l.password,
          ports: this.options.backend === '3proxy' ? l.ports : l.ports.filter((p) => p === 'http'),
        }))
        .filter((l) => l.ports.length > 0),
      allowlist: this.access.allowlist,
      ...(this.shapingPlace === '3proxy' ? { bandwidth: this.access.limits } : {}),
    };
  }

  /** The kernel shapes the modem's own link; without one (the demo's loopback) only 3proxy can. */
  get shapingPlace(): ShapingPlace {
    if (this.options.routing !== false) return 'kernel';
    return this.options.backend === '3proxy' ? '3proxy' : 'none';
  }

  /** The password-less companions run (microsocks+tinyproxy with an allowlist). */
  private get companions(): boolean {
    return this.options.backend !== '3proxy' && this.access.allowlist.length > 0;
  }

  private get openPorts(): { http: number; socks: number } {
    const offset = this.options.openPortOffset ?? 2_000;
    return { http: this.allocation.httpPort + offset, socks: this.allocation.socksPort + offset };
  }

  private get ifb(): string {
    return ifbName(this.allocation.ifaceId);
  }

  start(): void {
    if (this.options.routing === false) return this.startProxy();
    const ipOptions = { ...this.options.ip, netns: this.options.netns };
    // a previous run's proxy for this modem being put away (its routing removed) is waited for
    const settled = this.left?.settled ?? Promise.resolve();
    this.routing = createActor(
      routingMachine.provide({
        actors: {
          applyRouting: fromPromise(async ({ input }) => {
            await settled;
            await applyRoute(this.route(input.address), ipOptions, input.previousAddress);
          }),
          verifyRouting: fromPromise(async ({ input }) => {
            await settled;
            return verifyRoute(this.route(input.address), ipOptions);
          }),
          removeRouting: fromPromise(() => removeRoute(this.route(this.address), ipOptions)),
        },
        actions: {
          // after the routing actor's step: starting the proxy actor (or signalling the modem's)
          // inside this action would run that actor's step nested in this one
          routingStatus: (_, { ok, detail }) =>
            queueMicrotask(() => {
              this.hooks.onRoutingProblem(ok ? null : detail);
              if (ok && !this.proxy && !this.stopped) this.startProxy();
            }),
        },
      }),
      {
        input: {
          address: this.address,
          ...(this.options.routingConfig ? { config: this.options.routingConfig } : {}),
          // a proxy left serving has its routing in place: read back before touching it
          verifyFirst: this.left?.proxy !== undefined,
        },
      },
    );
    this.routing.start();
  }

  /** rest_for_one: the proxy starts after the routing it depends on. */
  private startProxy(): void {
    const canReload = this.options.backend === '3proxy';
    this.proxy = createActor(
      proxyMachine.provide({
        actors: {
          startProxy: fromPromise(({ input }) => {
            const starting = this.startProcesses(input.egress).catch((err: unknown) => {
              this.hooks.onProxyRestart();
              throw err;
            });
            this.starting = starting;
            void starting
              .finally(() => {
                if (this.starting === starting) this.starting = undefined;
              })
              .catch(() => undefined);
            return starting;
          }),
          reloadProxy: fromPromise(async ({ input }) => {
            await this.writeConfig(input.egress);
            await Promise.all(this.processes.map((p) => p.reload()));
            await this.updateRecords(input.egress);
          }),
          stopProxy: fromPromise(() => this.stopProcesses()),
        },
        actions: { proxyFailed: (_, { detail }) => queueMicrotask(() => this.hooks.onProxyFailed(detail)) },
      }),
      { input: { egress: this.address, config: { ...this.options.proxy, canReload } } },
    );
    this.proxy.start();
  }

  private configFile(): string {
    return join(this.options.runDir, `${this.imei}.${this.options.backend === '3proxy' ? 'cfg' : 'conf'}`);
  }

  private openConfigFile(): string {
    return join(this.options.runDir, `${this.imei}-open.conf`);
  }

  /** Writes the configs; true when one of them changed (a reload is due). */
  private async writeConfig(egress: string): Promise<boolean> {
    const spec = this.spec(egress);
    const text = this.options.backend === '3proxy' ? render3proxy(spec) : renderTinyproxy(spec);
    const main = await this.writeOwned(this.configFile(), text);
    const open = this.companions
      ? await this.writeOwned(this.openConfigFile(), renderOpenTinyproxy(spec, this.openPorts.http))
      : false;
    return main || open;
  }

  /** Writes a config; false when it already holds exactly this (nothing to reload). */
  private async writeOwned(file: string, text: string): Promise<boolean> {
    if (this.written.get(file) === text) return false;
    await writeFile(file, text, { mode: 0o600 });
    this.written.set(file, text);
    // the proxy reads it under its own uid; nobody else may (it holds the password)
    if (this.uid !== undefined) await chown(file, this.uid, this.uid);
    return true;
  }

  /** The kernel's part of the access: the link's limits, the allowlist's redirect (companions). */
  private async applyKernelAccess(): Promise<void> {
    const nsOptions = { netns: this.options.netns };
    const limits = this.access.limits;
    if (this.shapingPlace === 'kernel' && (this.shaped === null || !sameLimits(this.shaped, limits))) {
      // nothing to lift on a link never shaped by us (one a previous run handed over may be)
      if (
        this.shaped !== null ||
        this.inheritedLink ||
        limits.downloadKbps !== null ||
        limits.uploadKbps !== null
      )
        await applyShaping(this.iface, this.ifb, limits, nsOptions);
      this.shaped = limits;
      this.inheritedLink = false;
    }
    if (this.options.backend === '3proxy') return;
    if (this.companions) {
      await applyAccessList(
        {
          slot: this.allocation.slot,
          allowlist: this.access.allowlist,
          httpPort: this.allocation.httpPort,
          socksPort: this.allocation.socksPort,
          openHttpPort: this.openPorts.http,
          openSocksPort: this.openPorts.socks,
        },
        nsOptions,
      );
      this.accessListed = true;
    } else if (this.accessListed) {
      await removeAccessList(this.allocation.slot, nsOptions);
      this.accessListed = false;
    }
  }

  /** The egress policy lets this modem's uid out through its link (not in the demo: no routing). */
  private get gated(): { uid: number; gate: EgressGate } | undefined {
    const gate = this.options.egressGate;
    return gate && this.uid !== undefined && this.options.routing !== false
      ? { uid: this.uid, gate }
      : undefined;
  }

  /** The processes this data plane starts for `egress`, and what their pid files record. */
  private plan(egress: string): ProxyPlan {
    const s = this.spec(egress);
    const processes: PlannedProcess[] =
      this.options.backend === '3proxy'
        ? [
            {
              name: `${this.imei}-3proxy`,
              argv: [this.options.threeProxyPath ?? '3proxy', this.configFile()],
              reloads: true,
              reloadSettleMs: 100,
              ports: [
                { host: '127.0.0.1', port: s.httpPort },
                { host: '127.0.0.1', port: s.socksPort },
              ],
            },
          ]
        : [
            {
              name: `${this.imei}-socks`,
              argv: ['microsocks', ...microsocksArgs(s)],
              ports: [{ host: '127.0.0.1', port: s.socksPort }],
              // microsocks blanks -P at start: once ready, its /proc/PID/cmdline must not show it
              secrets: [s.password],
            },
            {
              name: `${this.imei}-http`,
              argv: ['tinyproxy', '-d', '-c', this.configFile()],
              ports: [{ host: '127.0.0.1', port: s.httpPort }],
              reloads: true,
              reloadLog: TINYPROXY_RELOAD,
            },
            ...(this.companions
              ? [
                  {
                    name: `${this.imei}-socks-open`,
                    argv: ['microsocks', ...openMicrosocksArgs(s, this.openPorts.socks)] as [
                      string,
                      ...string[],
                    ],
                    ports: [{ host: '127.0.0.1', port: this.openPorts.socks }],
                  },
                  {
                    name: `${this.imei}-http-open`,
                    argv: ['tinyproxy', '-d', '-c', this.openConfigFile()] as [string, ...string[]],
                    ports: [{ host: '127.0.0.1', port: this.openPorts.http }],
                    reloads: true,
                    reloadLog: TINYPROXY_RELOAD,
                  },
                ]
              : []),
          ];
    const routed = this.options.routing !== false;
    return {
      processes,
      meta: {
        imei: this.imei,
        fingerprint: proxyFingerprint({
          argvs: processes.map((p) => p.argv),
          // everything the processes read: logins, allowlist and limits are in the texts
          config: this.configTexts(s).join('\n\0\n'),
          uid: this.uid,
          netns: this.options.netns,
        }),
        egress,
        iface: routed ? this.iface : undefined,
        uid: this.uid,
        table: routed ? this.allocation.routingTable : undefined,
        priority: routed ? this.options.rulePriorityBase + 2 * this.allocation.slot : undefined,
        members: processes.map((p) => p.name),
      },
    };
  }

  /** The texts of the config files (main, then the companions' when they run). */
  private configTexts(spec: ProxySpec): string[] {
    const main = this.options.backend === '3proxy' ? render3proxy(spec) : renderTinyproxy(spec);
    return this.companions ? [main, renderOpenTinyproxy(spec, this.openPorts.http)] : [main];
  }

  /** The running processes' records after a reload: the next run compares its plan with them. */
  private async updateRecords(egress: string): Promise<void> {
    const meta = this.plan(egress).meta;
    for (const p of this.processes) await p.updateRecord(meta);
  }

  private async startProcesses(egress: string): Promise<void> {
    await this.stopProcesses();
    // counted (and held by its quota) from the first byte a customer sends; a proxy the previous
    // run left serving was counted by the same part all along (the kernel kept it): kept as it is
    await this.options.trafficGate?.admit({
      slot: this.allocation.slot,
      imei: this.imei,
      httpPort: this.allocation.httpPort,
      socksPort: this.allocation.socksPort,
      uid: this.uid ?? null,
    });
    const gated = this.gated;
    const plan = this.plan(egress);
    const left = this.left?.proxy;
    if (this.left) this.left = { ...this.left, proxy: undefined };
    const problem = left ? await this.adoptionProblem(left.modem, plan) : undefined;
    if (left && problem) {
      this.log.info({ problem }, 'replacing the proxy the previous run left: it is not what this run starts');
      await left.kill(problem);
    }
    if (gated && !this.admitted) {
      // before the proxy runs: until then its uid reaches nothing (fail closed)
      await gated.gate.admit(gated.uid, this.iface);
      this.admitted = true;
    }
    // the previous run's admission of an adopted proxy: this one's holds now
    if (left && problem === null) await left.release();
    // proxies running under their own uid read their config here: the directory (and its parents)
    // must let them through, as the state dir does for the embedded PostgreSQL
    await mkdir(this.options.runDir, { recursive: true, mode: 0o711 });
    // an adopted proxy's link and allowlist were set up by the previous run: re-applied the same
    await this.applyKernelAccess();
    // (the same texts an adopted proxy was started with: 3proxy and tinyproxy re-read them on SIGUSR1)
    await this.writeConfig(egress);
    this.scheduleExpiry();
    const base = {
      runDir: this.options.runDir,
      netns: this.options.netns,
      log: this.log,
      user: this.uid === undefined ? undefined : { uid: this.uid, gid: this.uid },
      record: plan.meta,
      pollMs: this.options.adoptedPollMs,
    };
    if (left && problem === null) {
      const processes: ProxyProcess[] = [];
      for (const [i, p] of plan.processes.entries()) {
        const was = left.modem.processes[i];
        if (was) processes.push(await ProxyProcess.adopt({ ...base, ...p }, was));
      }
      this.processes = processes;
      this.log.info(
        { pids: processes.map((p) => p.pid), egress },
        "adopted the previous run's proxy: its connections live on",
      );
      return this.watch(processes);
    }
    const processes = plan.processes.map((p) => new ProxyProcess({ ...base, ...p }));
    this.processes = processes;
    for (const p of processes) await p.start();
    await this.watch(processes);
  }

  /**
   * Why a left proxy cannot be adopted (null: it can): it must have been started with exactly what
   * this run starts (the fingerprint: address, ports, credentials, logins, allowlist, limits in a
   * config, uid), on this link, and every process must still run and listen.
   */
  private async adoptionProblem(left: LeftModem, plan: ProxyPlan): Promise<string | null> {
    if (left.egress !== plan.meta.egress)
      return `it egresses from ${left.egress}, the modem has ${plan.meta.egress} now`;
    if (left.fingerprint !== plan.meta.fingerprint)
      return 'it was started with other settings (credentials, access, ports, uid or config changed)';
    if (left.iface !== plan.meta.iface) return `it was set up on link ${left.iface ?? 'none'}`;
    if (left.processes.map((p) => p.name).join(',') !== plan.meta.members.join(','))
      return 'its processes are not the ones this backend runs';
    for (const p of left.processes) {
      if (!(await processAlive(p.pid, p.start))) return `${p.name} (pid ${p.pid}) is gone`;
      for (const port of p.ports)
        if (!(await listening(p.pid, port))) return `${p.name} does not listen on port ${port}`;
    }
    return null;
  }

  /** An exit of a process still serving is the proxy machine's `proxy.exited`. */
  private async watch(processes: ProxyProcess[]): Promise<void> {
    // fully stopped while these started (or were adopted): `stop()` waits for this
    if (this.stopped && !this.handedOver) {
      await Promise.all(processes.map((p) => p.stop()));
      return;
    }
    // handed over while these started: they stay for the next run, nothing here holds them
    if (this.handedOver) {
      for (const p of processes) p.detach();
      return;
    }
    for (const p of processes)
      void p.exited().then((exit) => {
        if (!this.processes.includes(p)) return;
        this.hooks.onProxyRestart();
        this.proxy?.send({
          type: 'proxy.exited',
          detail: `exit ${exit.code ?? exit.signal ?? '?'} ${exit.stderr.trim().slice(-200)}`,
        });
      });
  }

  private async stopProcesses(): Promise<void> {
    const processes = this.processes;
    this.processes = [];
    await Promise.all(processes.map((p) => p.stop()));
  }

  /** A new WAN address (rotation): routing first, then the proxy. */
  changeAddress(address: string): void {
    if (address === this.address) return;
    this.address = address;
    this.routing?.send({ type: 'address.changed', address });
    this.proxy?.send({ type: 'egress.changed', egress: address });
  }

  /**
   * New proxy credentials (a rotated password): the proxy processes are replaced (stopped, started
   * with them; their connections end), the routing untouched. Resolves once no process serves the
   * old ones any more; rejects (`credentials_not_applied`) when the proxy failed or did not come
   * back within `timeoutMs` (the old processes are stopped before the new start: none serves the
   * old password meanwhile).
   */
  async setCredentials(user: string, password: string, timeoutMs = 15_000): Promise<void> {
    if (user === this.allocation.proxyUser && password === this.allocation.proxyPassword) return;
    this.allocation = { ...this.allocation, proxyUser: user, proxyPassword: password };
    const proxy = this.proxy;
    // no proxy yet (routing still being applied): it starts with the new ones
    if (!proxy || this.stopped) return;
    proxy.send({ type: 'credentials.changed' });
    try {
      const s = await waitFor(
        proxy,
        (x) =>
          x.status !== 'active' ||
          x.matches('failed') ||
          (x.matches('running') && !x.context.credentialsStale),
        { timeout: timeoutMs },
      );
      if (!s.matches('running')) throw new Error(`the proxy is ${JSON.stringify(s.value)}`);
    } catch (err) {
      throw new ModemfleetError(
        'credentials_not_applied',
        `the proxy of ${this.imei} did not come back with its new credentials: ${coerceError(err).message}`,
        { cause: err },
      );
    }
  }

  /**
   * New access (logins, allowlist, limits; src/proxyAccess.ts), applied live where the backend
   * allows: limits by `tc class replace` on the link (no proxy touched); logins and the allowlist
   * by rewriting the configs and a reload that keeps every open connection (3proxy and tinyproxy
   * SIGUSR1; tinyproxy confirms on stdout) and by replacing the allowlist's nft table. Only a change
   * between no allowlist and one on microsocks+tinyproxy starts or stops the password-less
   * companions, which replaces the modem's processes (their connections end). Resolves once new
   * connections get the new access; rejects `access_not_applied`.
   */
  setAccess(access: ProxyAccess, timeoutMs = 15_000): Promise<void> {
    const next = this.accessChange.catch(() => undefined).then(() => this.applyAccess(access, timeoutMs));
    this.accessChange = next;
    return next;
  }

  private async applyAccess(access: ProxyAccess, timeoutMs: number): Promise<void> {
    const companionsBefore = this.companions;
    this.access = access;
    const proxy = this.proxy;
    // no proxy yet (routing still being applied): it starts with them
    if (!proxy || this.stopped) return;
    try {
      // a change of the companions, or an adopted tinyproxy (its reload cannot be confirmed):
      // the processes are replaced
      if (this.companions !== companionsBefore || this.processes.some((p) => !p.reloadConfirmable))
        return await this.replaceProcesses(timeoutMs);
      await this.applyKernelAccess();
      // a change of speed limits alone touches no proxy
      if (await this.writeConfig(this.address)) {
        await Promise.all(this.processes.map((p) => p.reload()));
        await this.updateRecords(this.address);
      }
      this.scheduleExpiry();
    } catch (err) {
      throw new ModemfleetError(
        'access_not_applied',
        `the proxy of ${this.imei} did not take its new access: ${coerceError(err).message}`,
        { cause: err },
      );
    }
  }

  /** Stops and starts the processes (they read the access at start); resolves once they serve. */
  private async replaceProcesses(timeoutMs: number): Promise<void> {
    const proxy = this.proxy;
    if (!proxy) return;
    proxy.send({ type: 'credentials.changed' });
    const s = await waitFor(
      proxy,
      (x) =>
        x.status !== 'active' || x.matches('failed') || (x.matches('running') && !x.context.credentialsStale),
      { timeout: timeoutMs },
    );
    if (!s.matches('running')) throw new Error(`the proxy is ${JSON.stringify(s.value)}`);
  }

  /** At the next login's expiry the configs are rendered without it and reloaded (no restart). */
  private scheduleExpiry(): void {
    clearTimeout(this.expiryTimer);
    const at = nextExpiry(this.access, Date.now());
    if (at === null || this.stopped) return;
    // setTimeout takes at most 2^31-1 ms: a far expiry is looked at again later
    this.expiryTimer = setTimeout(
      () => {
        if (this.stopped) return;
        this.log.info('a login expired; the proxy reloads without it');
        this.setAccess(this.access).catch((err: unknown) => {
          this.log.warn({ err: coerceError(err) }, 'an expired login not dropped; replacing the proxy');
          void this.replaceProcesses(15_000).catch(() => undefined);
        });
      },
      Math.min(Math.max(0, at - Date.now()) + 50, 2_000_000_000),
    );
    this.expiryTimer.unref();
  }

  /** Re-apply routing now (the egress guard saw the port fail). */
  reapplyRouting(): void {
    this.routing?.send({ type: 'link.changed' });
  }

  /** Pids of the running proxy processes (tests, the inspector). */
  get pids(): number[] {
    return this.processes.flatMap((p) => (p.pid === undefined ? [] : [p.pid]));
  }

  /** Its proxy processes run and listen (the proxy machine is `running`: started, not restarting). */
  get serving(): boolean {
    return this.proxy?.getSnapshot().value === 'running';
  }

  /** Adopted from the previous run: every process of the proxy now is one it left (tests). */
  get adopted(): boolean {
    return this.processes.length > 0 && this.processes.every((p) => p.isAdopted);
  }

  /**
   * The supervisor hands over to the next run: the actors stop here, but what they set up stays
   * as it is: the proxy processes keep serving (their pid files record what the next run checks),
   * the routing stays applied, the uid admitted, the link's limits and the allowlist in place, the
   * configs written. Nothing here holds the processes any more. Idempotent.
   */
  handover(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.handedOver = true;
    clearTimeout(this.expiryTimer);
    const proxy = this.proxy;
    const routing = this.routing;
    this.proxy = undefined;
    this.routing = undefined;
    // effects in flight finish on their own (a proxy starting now is detached once started)
    proxy?.stop();
    routing?.stop();
    const processes = this.processes;
    this.processes = [];
    const pids = processes.map((p) => p.pid);
    for (const p of processes) p.detach();
    this.log.info({ pids }, 'proxy handed over to the next run');
  }

  /** Reverse order: the proxy, then its routing. Idempotent. */
  async stop(): Promise<void> {
    if (this.handedOver) return;
    this.stopped = true;
    clearTimeout(this.expiryTimer);
    const proxy = this.proxy;
    const routing = this.routing;
    this.proxy = undefined;
    this.routing = undefined;
    // a previous run's proxy never claimed (the modem went offline first) goes too
    const left = this.left?.proxy;
    if (this.left) this.left = { ...this.left, proxy: undefined };
    if (left)
      await left.kill('its modem went offline before it was adopted').catch((err: unknown) => {
        this.log.warn({ err: coerceError(err) }, "stopping the previous run's proxy failed");
      });
    try {
      if (proxy) {
        proxy.send({ type: 'stop' });
        await waitFor(proxy, (s) => s.status === 'done', { timeout: 15_000 });
      }
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'stopping the proxy failed');
    }
    // a start (or an adoption) in flight when the stop came: what it leaves running goes too
    await this.starting?.catch(() => undefined);
    await this.stopProcesses();
    const gated = this.gated;
    if (gated && this.admitted)
      try {
        this.admitted = false;
        await gated.gate.release(gated.uid, this.iface);
      } catch (err) {
        this.log.warn({ err: coerceError(err) }, 'taking the egress policy back failed');
      }
    try {
      if (routing) {
        routing.send({ type: 'remove' });
        await waitFor(routing, (s) => s.status === 'done', { timeout: 15_000 });
      }
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'removing the routing failed');
    }
    await this.removeKernelAccess();
    this.written.clear();
    await rm(this.configFile(), { force: true });
    await rm(this.openConfigFile(), { force: true });
  }

  private async removeKernelAccess(): Promise<void> {
    const nsOptions = { netns: this.options.netns };
    try {
      if (this.shaped !== null) await removeShaping(this.iface, this.ifb, nsOptions);
      this.shaped = null;
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'lifting the speed limits failed');
    }
    if (this.accessListed)
      await removeAccessList(this.allocation.slot, nsOptions).then(
        () => (this.accessListed = false),
        (err: unknown) => this.log.warn({ err: coerceError(err) }, 'removing the allowlist table failed'),
      );
  }
}

/** tinyproxy at LogLevel Notice says this on stdout when a SIGUSR1 reload took effect (or not). */
const TINYPROXY_RELOAD = { done: 'Reloading config file finished', failed: 'Reloading config file failed' };

const sameLimits = (a: SpeedLimits, b: SpeedLimits): boolean =>
  a.downloadKbps === b.downloadKbps && a.uploadKbps === b.uploadKbps;
