import { chown, mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createActor, fromPromise, waitFor, type Actor } from 'xstate';
import { proxyMachine, type ProxyConfig } from '../../machines/proxyMachine.js';
import { routingMachine, type RoutingConfig } from '../../machines/routingMachine.js';
import type { Logger } from '../log.js';
import type { LeftModem } from '../net/leftProxies.js';
import { microsocksArgs, render3proxy, renderTinyproxy, type ProxySpec } from '../net/proxyConfig.js';
import { ProxyProcess } from '../net/proxyProcess.js';
import { listening, processAlive, proxyFingerprint, type ProxyRecordMeta } from '../net/proxyRecord.js';
import { applyRoute, removeRoute, verifyRoute, type ModemRoute } from '../net/routing.js';
import type { Allocation } from '../store/types.js';
import { ModemfleetError, coerceError } from '../util/errors.js';

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

/** What this data plane would start: the processes, the config text, the record for the next run. */
interface ProxyPlan {
  processes: {
    name: string;
    argv: [string, ...string[]];
    ports: { host: string; port: number }[];
    secrets?: string[];
  }[];
  config: string;
  meta: ProxyRecordMeta;
}

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
  /** Handed over to the next run: what runs stays running. */
  private handedOver = false;
  private admitted = false;
  private readonly log: Logger;

  constructor(
    private readonly options: DataPlaneOptions,
    readonly imei: string,
    private readonly iface: string,
    private allocation: Allocation,
    address: string,
    private readonly hooks: DataPlaneHooks,
    log: Logger,
    /** The proxy a previous run left for this modem, and when its routing may be touched. */
    private left?: { proxy: LeftProxy | undefined; settled: Promise<void> },
  ) {
    this.address = address;
    this.log = log.child({ component: 'dataplane' });
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
    };
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
          startProxy: fromPromise(({ input }) =>
            this.startProcesses(input.egress).catch((err: unknown) => {
              this.hooks.onProxyRestart();
              throw err;
            }),
          ),
          reloadProxy: fromPromise(async ({ input }) => {
            await this.writeConfig(input.egress);
            for (const p of this.processes) p.reload();
            // the next run compares its own plan with this one
            const meta = this.plan(input.egress).meta;
            for (const p of this.processes) await p.updateRecord(meta);
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

  private configText(egress: string): string {
    return this.options.backend === '3proxy'
      ? render3proxy(this.spec(egress))
      : renderTinyproxy(this.spec(egress));
  }

  private async writeConfig(egress: string): Promise<void> {
    await writeFile(this.configFile(), this.configText(egress), { mode: 0o600 });
    // the proxy reads it under its own uid; nobody else may (it holds the password)
    if (this.uid !== undefined) await chown(this.configFile(), this.uid, this.uid);
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
    const processes: ProxyPlan['processes'] =
      this.options.backend === '3proxy'
        ? [
            {
              name: `${this.imei}-3proxy`,
              argv: [this.options.threeProxyPath ?? '3proxy', this.configFile()],
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
            },
          ];
    const config = this.configText(egress);
    const routed = this.options.routing !== false;
    return {
      processes,
      config,
      meta: {
        imei: this.imei,
        fingerprint: proxyFingerprint({
          argvs: processes.map((p) => p.argv),
          config,
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

  private async startProcesses(egress: string): Promise<void> {
    await this.stopProcesses();
    const gated = this.gated;
    const plan = this.plan(egress);
    // proxies running under their own uid read their config here: the directory (and its parents)
    // must let them through, as the state dir does for the embedded PostgreSQL
    await mkdir(this.options.runDir, { recursive: true, mode: 0o711 });
    const base = {
      runDir: this.options.runDir,
      netns: this.options.netns,
      log: this.log,
      user: this.uid === undefined ? undefined : { uid: this.uid, gid: this.uid },
      record: plan.meta,
      pollMs: this.options.adoptedPollMs,
    };
    const left = this.left?.proxy;
    if (this.left) this.left = { ...this.left, proxy: undefined };
    if (left) {
      const problem = await this.adoptionProblem(left.modem, plan);
      if (problem === null) {
        if (gated && !this.admitted) {
          await gated.gate.admit(gated.uid, this.iface);
          this.admitted = true;
        }
        await left.release();
        // the same text it was started with (3proxy re-reads it on SIGUSR1)
        await this.writeConfig(egress);
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
      this.log.info({ problem }, 'replacing the proxy the previous run left: it is not what this run starts');
      await left.kill(problem);
    }
    if (gated && !this.admitted) {
      // before the proxy runs: until then its uid reaches nothing (fail closed)
      await gated.gate.admit(gated.uid, this.iface);
      this.admitted = true;
    }
    await this.writeConfig(egress);
    const processes = plan.processes.map((p) => new ProxyProcess({ ...base, ...p }));
    this.processes = processes;
    for (const p of processes) await p.start();
    this.watch(processes);
  }

  /**
   * Why a left proxy cannot be adopted (null: it can): it must have been started with exactly what
   * this run starts (the fingerprint: address, ports, credentials, config, uid), on this link, and
   * every process must still run and listen.
   */
  private async adoptionProblem(left: LeftModem, plan: ProxyPlan): Promise<string | null> {
    if (left.egress !== plan.meta.egress)
      return `it egresses from ${left.egress}, the modem has ${plan.meta.egress} now`;
    if (left.fingerprint !== plan.meta.fingerprint)
      return 'it was started with other settings (credentials, ports, uid or config changed)';
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
  private watch(processes: ProxyProcess[]): void {
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

  /** Re-apply routing now (the egress guard saw the port fail). */
  reapplyRouting(): void {
    this.routing?.send({ type: 'link.changed' });
  }

  /** Pids of the running proxy processes (tests, the inspector). */
  get pids(): number[] {
    return this.processes.flatMap((p) => (p.pid === undefined ? [] : [p.pid]));
  }

  /** Adopted from the previous run: every process of the proxy now is one it left (tests). */
  get adopted(): boolean {
    return this.processes.length > 0 && this.processes.every((p) => p.isAdopted);
  }

  /**
   * The supervisor hands over to the next run: the actors stop here, but what they set up stays
   * as it is: the proxy processes keep serving (their pid files record what the next run checks),
   * the routing stays applied and the uid admitted, the config file stays. Nothing here holds the
   * processes any more. Idempotent.
   */
  handover(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.handedOver = true;
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
      await this.stopProcesses();
    }
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
    await rm(this.configFile(), { force: true });
  }
}
