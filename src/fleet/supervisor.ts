import { createActor, fromPromise, type Actor } from 'xstate';
import { fleetMachine, type FleetDevice } from '../../machines/fleetMachine.js';
import type { ModemConfig } from '../../machines/modemTypes.js';
import type { HotplugSource } from '../detect/hotplugSources.js';
import { Detector } from '../detect/detector.js';
import { DEFAULT_SCAN, type ScanOptions } from '../detect/sysfsScan.js';
import type { DetectionEvent, DeviceDescriptor } from '../detect/types.js';
import { silentLogger, type Logger } from '../log.js';
import { slotCount } from '../allocationRanges.js';
import { EgressPolicy } from '../net/egressPolicy.js';
import { DEFAULT_POLICY, type Policy } from '../policy.js';
import type { ListenerStats } from '../store/listener.js';
import type { Store } from '../store/store.js';
import type { Command } from '../store/types.js';
import { pathExists } from '../util/fs.js';
import { sleep } from '../util/time.js';
import { CommandProcessor, type CommandStats } from './commandProcessor.js';
import { FleetCounters, FleetEvents, type CommandOutcome } from './events.js';
import type { JournalStats, JournalWriter } from './journalWriter.js';
import { recorders, type Recorders } from './recorders.js';
import type { FsyncPolicy } from './spool.js';
import { coerceError } from '../util/errors.js';
import { isRetryable } from '../store/pgErrors.js';
import { HostEgress } from './egress.js';
import { LeftProxies } from './handover.js';
import { releaseRunDir, claimRunDir } from '../net/runDirLock.js';
import { Modem, journalRemoved, type FleetDataPlaneOptions, type ModemDeps } from './modem.js';
import { ModemDirectory } from './modemDirectory.js';
import type { NoReuse, RotationSchedule } from './rotationSchedule.js';
import { FarmWarden } from './farmWarden.js';
import { RotationScheduler } from './rotationScheduler.js';
import type { ModemLinkOptions } from './modemLink.js';
import { TrafficMonitor, type TrafficFigures } from './trafficMonitor.js';

const later = (fn: () => void): void => queueMicrotask(fn);

export interface SupervisorOptions {
  store: Store;
  /** The state directory: the journal spool lives in `<stateDir>/spool`. */
  stateDir: string;
  scan?: ScanOptions;
  /** Hotplug events (udevadm in production, a sysfs watch in the lab); without one, rescans only. */
  hotplug?: HotplugSource;
  rescanIntervalMs?: number;
  modem?: Partial<ModemConfig>;
  /** Link options beyond the policy's (APN, power-cycle command, AT timeouts, ...). */
  link?: Omit<ModemLinkOptions, 'atPort' | 'log'>;
  spool?: { maxBytes?: number; fsync?: FsyncPolicy };
  /** Limits and timeouts (DEFAULT_POLICY for what is not given). */
  policy?: Partial<Policy>;
  /** Routing and proxies per modem, and the egress guard; unset: no data plane. */
  dataPlane?: FleetDataPlaneOptions;
  /** Where clients reach this host's proxy ports (stored with the host, shown by the API). */
  proxyHost?: string;
  /** The farm's default rotation schedule for modems without their own (config `rotation.schedule`). */
  rotationSchedule?: RotationSchedule | undefined;
  /** Config `rotation.noReuseHours`/`noReuseScope` (with an egress guard). */
  noReuse?: NoReuse | undefined;
  /**
   * Traffic accounting and quotas in the kernel (src/fleet/trafficMonitor.ts; needs a data plane
   * and nftables): `probeUid` is the supervisor's own uid, whose egress probes are not counted.
   */
  traffic?: { probeUid: number | null; removeOnStop?: boolean } | undefined;
  log?: Logger;
}

export interface SupervisorStatus {
  /** start() finished and stop() not called. */
  started: boolean;
  startedAt: Date | undefined;
  journal: JournalStats & JournalWriter['lag'];
  commands: CommandStats;
  /** Rotations carried out by this process, by result (`done` or the error code). */
  rotations: Record<string, number>;
  commandListener: ListenerStats | undefined;
  proxyRestarts: number;
  /** From the event stream: egress checks through the ports (and those that failed), data planes up. */
  egress: { checks: number; failures: number };
  dataPlanes: number;
  alertsRaised: number;
  /** Alerts waiting for the database, and those dropped because too many waited. */
  alerts: { waiting: number; dropped: number };
  /** Modem actors of this process by top-level state. */
  localModems: Record<string, number>;
  /** Payload bytes through each modem's ports as the kernel counts them (empty without accounting). */
  traffic: TrafficFigures[];
}

/** What the fleet and a `Modem` take from a detected device. */
function fleetDevice(device: DeviceDescriptor, atPort: string): FleetDevice {
  return {
    usbPath: device.usbPath,
    atPort,
    iface: device.net,
    atCandidates: device.atCandidates,
    sysPath: device.sysPath,
  };
}

/**
 * The running farm: detection feeds the fleet machine (batches, one_for_one restarts), which
 * starts and stops one `Modem` per USB path. Everything that happens is a typed fleet event
 * (`events`): the journal writer, the health writer and the alert queue are subscribers. Commands
 * come from NOTIFY catch-ups and go to the Modem serving the IMEI. On start the farm is reconciled
 * with what the database remembers (journal positions, desired states, modems gone meanwhile);
 * stop runs in reverse order.
 */
export class Supervisor {
  readonly events: FleetEvents;
  readonly journal: Recorders['journal'];
  readonly health: Recorders['health'];
  readonly retention: Recorders['retention'];
  readonly alerts: Recorders['alerts'];
  readonly commands: CommandProcessor;
  readonly scheduler: RotationScheduler;
  /** The farm-wide liveness sweep, done here while this host holds the `farm` lease. */
  readonly warden: FarmWarden;
  private readonly counters: FleetCounters;
  private readonly policy: Policy;
  private readonly directory = new ModemDirectory<Modem>();
  private readonly byPath = new Map<string, Modem>();
  private readonly modemDeps: ModemDeps;
  private readonly detector: Detector;
  private readonly fleet: Actor<typeof fleetMachine>;
  private readonly stopping = new Set<Promise<void>>();
  /** What the proxies' uids may reach (kernel rules); applied before any proxy starts. */
  private readonly egressPolicy: EgressPolicy | undefined;
  /** Traffic counters and quotas (kernel), sampled into PostgreSQL. */
  readonly traffic: TrafficMonitor | undefined;
  /** Proxies a previous run handed over, until their modems' data planes adopt them (or they are killed). */
  private readonly left: LeftProxies | undefined;
  /** stop() hands the proxies over to the next run instead of stopping them. */
  private handingOver = false;
  private heartbeat: NodeJS.Timeout | undefined;
  private startedAt: Date | undefined;
  private stopped = false;
  private readonly log: Logger;

  constructor(private readonly options: SupervisorOptions) {
    const log = (this.log = (options.log ?? silentLogger).child({ component: 'supervisor' }));
    const policy = (this.policy = { ...DEFAULT_POLICY, ...options.policy });
    const store = options.store;
    const events = (this.events = new FleetEvents(log));
    this.counters = new FleetCounters(events);
    ({
      journal: this.journal,
      health: this.health,
      alerts: this.alerts,
      retention: this.retention,
    } = recorders(events, { store, stateDir: options.stateDir, spool: options.spool, policy, log }));
    this.commands = new CommandProcessor({
      store,
      log,
      execute: (command) => this.execute(command),
      pollIntervalMs: policy.commandPollMs,
      rotationMinIntervalMs: policy.rotationMinIntervalMs,
      hostDeadAfterMs: policy.hostDeadAfterMs,
    });
    this.warden = new FarmWarden({
      store,
      intervalMs: policy.hostHeartbeatMs,
      deadAfterMs: policy.hostDeadAfterMs,
      log,
    });
    this.scheduler = new RotationScheduler({
      store,
      farmDefault: options.rotationSchedule,
      pollMs: policy.rotationSchedulePollMs,
      log,
    });
    const dataPlane = options.dataPlane;
    const uidBase = dataPlane?.proxyUidBase;
    if (dataPlane && uidBase !== undefined && dataPlane.egressPolicy !== null)
      this.egressPolicy = new EgressPolicy({
        // every uid a proxy of this host may run as: one per slot of the allocation ranges
        uids: { from: uidBase, to: uidBase + slotCount(store.ranges) - 1 },
        allow: dataPlane.egressPolicy?.allow ?? [],
        deny: dataPlane.egressPolicy?.deny ?? [],
        internet: dataPlane.egressPolicy?.internet ?? true,
        netns: dataPlane.netns,
        log,
      });
    if (dataPlane && options.traffic)
      this.traffic = new TrafficMonitor({
        store,
        stateDir: options.stateDir,
        spool: options.spool,
        netns: dataPlane.netns,
        probeUid: options.traffic.probeUid,
        removeOnStop: options.traffic.removeOnStop ?? false,
        policy,
        events,
        onPortChange: (imei, reason, detail) => this.directory.serving(imei)?.journalPort(reason, detail),
        log,
      });
    if (dataPlane)
      this.left = new LeftProxies({
        runDir: dataPlane.runDir,
        routing: dataPlane.routing !== false,
        ip: { ...dataPlane.ip, netns: dataPlane.netns },
        gate: this.egressPolicy,
        adoptWithinMs: policy.handoverAdoptMs,
        log,
      });
    this.modemDeps = {
      store,
      events,
      directory: this.directory,
      policy,
      modem: options.modem,
      link: {
        presencePollMs: policy.presencePollMs,
        maxConsecutiveTimeouts: policy.maxConsecutiveTimeouts,
        addressPolls: policy.addressPolls,
        addressPollMs: policy.addressPollMs,
        powerCycleTimeoutMs: policy.powerCycleTimeoutMs,
        ...options.link,
      },
      dataPlane: options.dataPlane && {
        adoptedPollMs: policy.adoptedProxyPollMs,
        ...options.dataPlane,
        egressGate: this.egressPolicy,
        trafficGate: this.traffic?.gate,
      },
      leftProxies: this.left,
      noReuse: options.noReuse,
      ...(options.dataPlane?.egress ? { hostEgress: new HostEgress(options.dataPlane.egress) } : {}),
      log,
      stopping: () => this.stopped,
      track: (done) => this.track(done),
    };
    this.detector = new Detector({
      scan: options.scan ?? DEFAULT_SCAN,
      ...(options.hotplug ? { source: options.hotplug } : {}),
      ...(options.rescanIntervalMs ? { rescanIntervalMs: options.rescanIntervalMs } : {}),
      onEvents: (detected) => this.onDetection(detected),
      log,
    });
    this.fleet = createActor(
      fleetMachine.provide({
        // carried out right after the fleet's step, in order: starting or signalling a modem actor
        // inside a fleet action would run that actor's own step nested in the fleet's
        actions: {
          startModems: (_, { devices }) => later(() => devices.forEach((d) => this.startModem(d))),
          stopModem: (_, { usbPath }) => later(() => this.stopModem(usbPath)),
          forward: (_, { usbPath, event }) =>
            later(() => this.byPath.get(usbPath)?.runtime.send({ type: event })),
          alert: (_, { kind, message }) =>
            events.emit('alert', { alert: { kind, severity: 'critical', message } }),
        },
        actors: { stopAll: fromPromise(() => this.stopAllModems()) },
      }),
      {
        input: {
          config: { maxRestarts: policy.modemMaxRestarts, restartWindowMs: policy.modemRestartWindowMs },
        },
      },
    );
  }

  /** Counters and lags for health checks and metrics (the inspector reads them). */
  status(): SupervisorStatus {
    const modems = new Map<string, number>();
    for (const modem of this.byPath.values()) modems.set(modem.top, (modems.get(modem.top) ?? 0) + 1);
    return {
      started: this.startedAt !== undefined && !this.stopped,
      startedAt: this.startedAt,
      journal: { ...this.journal.stats, ...this.journal.lag },
      commands: this.commands.stats,
      commandListener: this.commands.listenerStats,
      proxyRestarts: this.counters.proxyRestarts,
      rotations: Object.fromEntries(this.counters.rotations),
      egress: { checks: this.counters.egressChecks, failures: this.counters.egressFailures },
      dataPlanes: this.counters.dataPlanesUp,
      alertsRaised: this.counters.alertsRaised,
      alerts: { waiting: this.alerts.waiting, dropped: this.alerts.dropped },
      localModems: Object.fromEntries(modems),
      traffic: this.traffic?.figures() ?? [],
    };
  }

  /** Modems by USB path (read-only view for tests and the inspector). */
  get modems(): ReadonlyMap<string, Modem> {
    return this.byPath;
  }

  async start(): Promise<void> {
    const store = this.options.store;
    await store.registerHost({
      ...(this.options.proxyHost ? { proxyHost: this.options.proxyHost } : {}),
      ...(this.options.dataPlane ? { proxyBackend: this.options.dataPlane.backend } : {}),
    });
    this.heartbeat = setInterval(() => {
      store.heartbeat().catch((err: unknown) => this.log.warn({ err }, 'host heartbeat failed'));
    }, this.policy.hostHeartbeatMs);
    this.heartbeat.unref();
    // what a previous run left: spooled transitions first, so the database's seqs are current
    await this.journal.start();
    await this.journal.drained();
    this.directory.load(await store.hostModems());
    const interrupted = await store.failInterruptedCommands();
    if (interrupted.length)
      this.log.warn({ commands: interrupted }, 'commands interrupted by a restart failed');
    if (this.options.dataPlane && this.left) {
      // one supervisor per run dir: another one's proxies are not ours to adopt or kill
      await claimRunDir(this.options.dataPlane.runDir);
      // proxies a previous run handed over (or left when killed) are kept for their modems to
      // adopt when they are what this run would start; the rest is killed now: a leftover would
      // share its port with its replacement (3proxy sets SO_REUSEPORT)
      await this.left.start();
      // before any proxy: the counters (left by a previous run, carrying on: a handed-over proxy
      // was counted all along) and quotas are in place
      await this.traffic?.start();
      // the kept ones stay admitted as the previous run had them until adopted or killed
      await this.egressPolicy?.start(this.left.admissions());
    }
    this.health.start();
    this.retention.start();
    this.fleet.start();
    await this.detector.start();
    this.markAbsent();
    await this.commands.start();
    this.scheduler.start();
    this.warden.start();
    this.startedAt = new Date();
    this.log.info({ modems: this.byPath.size }, 'supervisor started');
  }

  /**
   * Modems this host had that are not plugged in any more are journaled as removed, and a proxy
   * the previous run left for one of them is killed now.
   */
  private markAbsent(): void {
    const present = new Set(this.detector.present.map((d) => d.usbPath));
    for (const record of this.directory.remembered) {
      if (record.usbPath && present.has(record.usbPath)) continue;
      this.left?.discard(record.imei, 'its modem is not plugged in');
      if (record.state === 'removed') continue;
      journalRemoved(this.modemDeps, record.imei, record.state, 'reconcile.absent', record.usbPath);
    }
  }

  private onDetection(detected: DetectionEvent[]): void {
    const added: FleetDevice[] = [];
    const removed: string[] = [];
    for (const e of detected) {
      if (e.type === 'device.removed') {
        removed.push(e.usbPath);
        continue;
      }
      if (e.type === 'device.changed' && e.device.ports.at === e.previous.ports.at) {
        // same AT port: a late or renamed net interface moves with the modem
        this.byPath.get(e.device.usbPath)?.updateDevice({ iface: e.device.net });
        continue;
      }
      if (e.device.fault || !e.device.ports.at) {
        const { vid, pid, usbPath, fault, faultCode } = e.device;
        // a device the host controller could not configure (out of endpoints) is not silently absent
        const resources = faultCode === 'usb_resources';
        this.events.emit('alert', {
          alert: {
            kind: resources ? 'usb_resources' : 'device_unusable',
            severity: resources ? 'critical' : 'warning',
            message: `USB device ${vid}:${pid} at ${usbPath} has no usable AT port${fault ? ` (${fault})` : ''}`,
          },
        });
        continue;
      }
      added.push(fleetDevice(e.device, e.device.ports.at));
    }
    if (added.length || removed.length) this.fleet.send({ type: 'devices.changed', added, removed });
  }

  private startModem(device: FleetDevice): void {
    // a new tty at a known place: the old actor cannot use it
    if (this.byPath.has(device.usbPath)) this.stopModem(device.usbPath);
    const modem = new Modem(device, this.modemDeps);
    this.byPath.set(device.usbPath, modem);
    void modem.ended.then((end) => {
      // reported to the fleet after the current step: a modem can end inside a fleet action
      if (this.byPath.get(device.usbPath) !== modem) return;
      if (end.crashed !== undefined)
        return this.fleet.send({ type: 'modem.crashed', usbPath: device.usbPath, error: end.crashed });
      this.fleet.send({ type: 'modem.done', usbPath: device.usbPath });
      // a quick replug can end the old actor after detection already saw the device again
      void this.restartIfPresent(device.usbPath, modem);
    });
    modem.start();
  }

  /**
   * A modem actor ended (its tty vanished) but detection still lists the device: a replug or a
   * re-enumeration quicker than the hotplug debounce, which detection reports as no change. The
   * tty is watched for a while; when it is back, a fresh actor starts.
   */
  private async restartIfPresent(usbPath: string, ended: Modem): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const device = this.detector.present.find((d) => d.usbPath === usbPath);
      const at = device?.ports.at;
      const another = (): boolean => (this.byPath.get(usbPath) ?? ended) !== ended;
      if (this.stopped || !at || device.fault || another()) return;
      const back = await pathExists(at);
      if (back && !this.stopped && !another()) {
        this.fleet.send({
          type: 'devices.changed',
          added: [fleetDevice(device, at)],
          removed: [],
        });
        return;
      }
      await sleep(200);
    }
  }

  private stopModem(usbPath: string): void {
    const modem = this.byPath.get(usbPath);
    if (!modem) return;
    this.byPath.delete(usbPath);
    this.track(
      modem
        .stop(this.handingOver ? 'handover' : 'stop')
        .catch((err: unknown) => this.log.warn({ err, usbPath }, 'stopping a modem failed')),
    );
  }

  /** A teardown that stop() waits for. */
  private track(done: Promise<void>): void {
    const tracked = done.finally(() => this.stopping.delete(tracked));
    this.stopping.add(tracked);
  }

  private async execute(command: Command): Promise<CommandOutcome> {
    this.events.emit('command.started', { command });
    const modem = this.directory.serving(command.imei);
    let outcome: CommandOutcome;
    try {
      outcome = modem
        ? await modem.command(command)
        : command.kind === 'credentials'
          ? // nothing serves it here: its proxy starts with the stored (new) password and access
            { ok: true, result: { applied: false } }
          : { ok: false, result: { error: 'not_present' } };
    } catch (err) {
      // never unanswered: a command that threw is finished as failed, and says so
      outcome = { ok: false, result: { error: 'internal', message: coerceError(err).message.slice(0, 300) } };
    }
    this.events.emit('command.finished', { command, outcome });
    return outcome;
  }

  private async stopAllModems(): Promise<void> {
    await Promise.resolve(); // after the starts and stops the fleet queued before `stop`
    for (const usbPath of [...this.byPath.keys()]) this.stopModem(usbPath);
    await Promise.all([...this.stopping]);
  }

  /**
   * Graceful: commands, detection, modems, then the writers flush. Reports every failed step.
   * `handover` (what SIGTERM asks for: a restart or an upgrade): the same, except that every online
   * modem's proxy processes, routing and egress admission stay in place, recorded in the run dir,
   * for the next run to adopt; the modems' data calls are never touched by a stop either way.
   */
  async stop(options: { handover?: boolean } = {}): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.handingOver = options.handover === true && this.options.dataPlane !== undefined;
    const failures: unknown[] = [];
    const step = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        try {
          await fn();
          return;
        } catch (err) {
          // a pooled connection that died in a database blip fails the step's first query: once more
          if (attempt === 1 && isRetryable(err)) continue;
          failures.push(err);
          this.log.error({ err, step: name }, 'shutdown step failed');
          return;
        }
      }
    };
    clearInterval(this.heartbeat);
    await step('warden', () => this.warden.stop());
    await step('scheduler', () => this.scheduler.stop());
    await step('commands', () => this.commands.stop());
    await step('detection', () => this.detector.stop());
    await step('modems', async () => {
      this.fleet.send({ type: 'stop' });
      await new Promise<void>((resolve) => {
        if (this.fleet.getSnapshot().status === 'done') return resolve();
        this.fleet.subscribe((s) => s.status === 'done' && resolve());
      });
    });
    if (this.left) await step('left proxies', () => this.left?.stop(this.handingOver ? 'handover' : 'stop'));
    // after every proxy has stopped: none is left to hold back (handed over: the table stays)
    if (this.egressPolicy)
      await step('egress policy', () =>
        this.handingOver ? this.egressPolicy?.handover() : this.egressPolicy?.stop(),
      );
    // the last read is sampled; the table stays (its counters and closed ports outlive us, and
    // count what the proxies handed over serve until the next run reads them)
    if (this.traffic) await step('traffic', () => this.traffic?.stop({ handover: this.handingOver }));
    const runDir = this.options.dataPlane?.runDir;
    if (runDir) await step('run dir', () => releaseRunDir(runDir));
    await step('retention', () => this.retention.stop());
    await step('health', () => this.health.stop());
    await step('journal', () => this.journal.stop());
    await step('alerts', () => this.alerts.stop());
    await step('host', () => this.options.store.stopHost());
    if (failures.length) throw new AggregateError(failures, `${failures.length} shutdown step(s) failed`);
  }
}
