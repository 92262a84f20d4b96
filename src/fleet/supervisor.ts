import { join } from 'node:path';
import { createActor, fromPromise, type Actor } from 'xstate';
import { fleetMachine, type FleetDevice } from '../../machines/fleetMachine.js';
import type { AlertInfo, ModemConfig, SignalSample } from '../../machines/modemTypes.js';
import type { HotplugSource } from '../detect/hotplugSources.js';
import { Detector } from '../detect/detector.js';
import { DEFAULT_SCAN, type ScanOptions } from '../detect/sysfsScan.js';
import type { DetectionEvent } from '../detect/types.js';
import { silentLogger, type Logger } from '../log.js';
import type { ModemRecord } from '../store/reconcile.js';
import type { ListenerStats } from '../store/listener.js';
import type { Store } from '../store/store.js';
import type { Allocation, Command, TransitionRecord } from '../store/types.js';
import { coerceError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { backoffDelay, sleep } from '../util/time.js';
import { AlertQueue } from './alertQueue.js';
import { CommandProcessor, type CommandOutcome, type CommandStats } from './commandProcessor.js';
import { HealthWriter } from './healthWriter.js';
import { JournalWriter, type JournalStats, type SpooledTransition } from './journalWriter.js';
import type { ModemLinkOptions } from './modemLink.js';
import { ModemRuntime, stateName, type ModemTransition } from './modemRuntime.js';
import { ModemSlot } from './modemSlot.js';
import { DataPlanes, type FleetDataPlaneOptions } from './dataPlanes.js';
import { sweepProxies } from '../net/proxyProcess.js';
import { Spool, type FsyncPolicy } from './spool.js';

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
  link?: Omit<ModemLinkOptions, 'atPort' | 'log'>;
  fleet?: { maxRestarts?: number; restartWindowMs?: number };
  spool?: { maxBytes?: number; fsync?: FsyncPolicy };
  heartbeatMs?: number;
  commandTimeoutMs?: number;
  commandPollMs?: number;
  healthFlushMs?: number;
  healthRetentionSeconds?: number;
  /** Routing and proxies per modem, and the egress guard; unset: no data plane. */
  dataPlane?: FleetDataPlaneOptions;
  /** Where clients reach this host's proxy ports (stored with the host, shown by the API). */
  proxyHost?: string;
  log?: Logger;
}

export interface SupervisorStatus {
  /** start() finished and stop() not called. */
  started: boolean;
  startedAt: Date | undefined;
  journal: JournalStats & JournalWriter['lag'];
  commands: CommandStats;
  commandListener: ListenerStats | undefined;
  proxyRestarts: number;
  /** Alerts waiting for the database, and those dropped because too many waited. */
  alerts: { waiting: number; dropped: number };
  /** Modem actors of this process by top-level state. */
  localModems: Record<string, number>;
}

export interface SupervisorEvents {
  /** The IMEI of a slot is known and its journal position settled (tests, the inspector). */
  onIdentified?: (imei: string, usbPath: string) => void;
  /** A modem got its ports (sticky per IMEI). */
  onAllocated?: (allocation: Allocation) => void;
  /** Every journal record as it is handed to the writer (tests compare it with the database). */
  onJournal?: (record: TransitionRecord) => void;
  /** A command was carried out here, before its result is written (tests count executions). */
  onCommand?: (command: Command, outcome: CommandOutcome) => void;
}

/**
 * The running farm: detection feeds the fleet machine, which starts one modem runtime per device
 * (in batches); every transition goes to the journal writer (group commit, spool while the
 * database is away), commands come from NOTIFY catch-ups, health samples are batched. On start
 * the farm is reconciled with what the database remembers: journal positions, desired states,
 * modems that went away while we were down.
 */
export class Supervisor {
  readonly journal: JournalWriter;
  readonly health: HealthWriter;
  readonly commands: CommandProcessor;
  /** Alerts waiting for the database (retried until stored). */
  readonly alerts: AlertQueue;
  private readonly detector: Detector;
  private readonly fleet: Actor<typeof fleetMachine>;
  private readonly slots = new Map<string, ModemSlot>();
  private readonly byImei = new Map<string, ModemSlot>();
  /** Last journal seq per IMEI, kept across actors of the same modem. */
  private readonly seqs = new Map<string, number>();
  private readonly remembered = new Map<string, ModemRecord>();
  /** Allocations of identified modems (ports, table, credentials). */
  private readonly allocated = new Map<string, Allocation>();
  /** The IMEI last identified at each USB path. */
  private readonly lastAt = new Map<string, string>();
  private readonly stopping = new Set<Promise<void>>();
  private readonly dataPlanes: DataPlanes | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private startedAt: Date | undefined;
  private stopped = false;
  private readonly log: Logger;

  constructor(
    private readonly options: SupervisorOptions,
    private readonly events: SupervisorEvents = {},
  ) {
    this.log = (options.log ?? silentLogger).child({ component: 'supervisor' });
    const store = options.store;
    this.alerts = new AlertQueue((alert) => store.raiseAlert(alert), { log: this.log });
    this.journal = new JournalWriter({
      sink: store,
      spool: new Spool<SpooledTransition>({
        dir: join(options.stateDir, 'spool'),
        maxBytes: options.spool?.maxBytes ?? 64 * 1024 * 1024,
        fsync: options.spool?.fsync ?? 'always',
      }),
      log: this.log,
      onAlert: (kind, message) => this.alert({ kind, severity: 'critical', message }),
    });
    this.health = new HealthWriter({
      sink: store,
      log: this.log,
      retentionSeconds: options.healthRetentionSeconds ?? 7 * 86_400,
      ...(options.healthFlushMs ? { flushIntervalMs: options.healthFlushMs } : {}),
    });
    this.commands = new CommandProcessor({
      store,
      log: this.log,
      execute: async (command) => {
        const outcome = await this.execute(command);
        this.events.onCommand?.(command, outcome);
        return outcome;
      },
      ...(options.commandPollMs ? { pollIntervalMs: options.commandPollMs } : {}),
    });
    this.dataPlanes = options.dataPlane
      ? new DataPlanes(options.dataPlane, {
          log: this.log,
          alert: (alert, imei) => this.alert(alert, imei),
          current: (slot) => !this.stopped && this.slots.get(slot.usbPath) === slot,
          track: (done) => {
            const tracked = done.finally(() => this.stopping.delete(tracked));
            this.stopping.add(tracked);
          },
        })
      : undefined;
    this.detector = new Detector({
      scan: options.scan ?? DEFAULT_SCAN,
      ...(options.hotplug ? { source: options.hotplug } : {}),
      ...(options.rescanIntervalMs ? { rescanIntervalMs: options.rescanIntervalMs } : {}),
      onEvents: (events) => this.onDetection(events),
      log: this.log,
    });
    this.fleet = createActor(
      fleetMachine.provide({
        // carried out right after the fleet's step, in order: starting or signalling a modem actor
        // inside a fleet action would run that actor's own step nested in the fleet's
        actions: {
          startModems: (_, { devices }) => later(() => devices.forEach((d) => this.startModem(d))),
          stopModem: (_, { usbPath }) => later(() => this.stopModem(usbPath)),
          forward: (_, { usbPath, event }) =>
            later(() => this.slots.get(usbPath)?.runtime.send({ type: event })),
          alert: (_, { kind, message }) => this.alert({ kind, severity: 'critical', message }),
        },
        actors: { stopAll: fromPromise(() => this.stopAllModems()) },
      }),
      { input: { config: options.fleet ?? {} } },
    );
  }

  /** Counters and lags for health checks and metrics (the inspector reads them). */
  status(): SupervisorStatus {
    const modems = new Map<string, number>();
    for (const slot of this.slots.values()) {
      const snapshot = slot.runtime.snapshot();
      const top = snapshot.status === 'active' ? (stateName(snapshot.value).split('.')[0] ?? '?') : 'stopped';
      modems.set(top, (modems.get(top) ?? 0) + 1);
    }
    return {
      started: this.startedAt !== undefined && !this.stopped,
      startedAt: this.startedAt,
      journal: { ...this.journal.stats, ...this.journal.lag },
      commands: this.commands.stats,
      commandListener: this.commands.listenerStats,
      proxyRestarts: this.dataPlanes?.stats.proxyRestarts ?? 0,
      alerts: { waiting: this.alerts.waiting, dropped: this.alerts.dropped },
      localModems: Object.fromEntries(modems),
    };
  }

  /** Slots by USB path (read-only view for tests and the inspector). */
  get modems(): ReadonlyMap<string, ModemSlot> {
    return this.slots;
  }

  async start(): Promise<void> {
    const store = this.options.store;
    await store.registerHost(this.options.proxyHost ? { proxyHost: this.options.proxyHost } : {});
    this.heartbeat = setInterval(() => {
      store.heartbeat().catch((err: unknown) => this.log.warn({ err }, 'host heartbeat failed'));
    }, this.options.heartbeatMs ?? 10_000);
    this.heartbeat.unref();
    // what a previous run left: spooled transitions first, so the database's seqs are current
    await this.journal.start();
    await this.journal.drained();
    for (const record of await store.hostModems()) {
      this.remembered.set(record.imei, record);
      this.seqs.set(record.imei, Math.max(record.seq, this.seqs.get(record.imei) ?? 0));
    }
    const interrupted = await store.failInterruptedCommands();
    if (interrupted.length)
      this.log.warn({ commands: interrupted }, 'commands interrupted by a restart failed');
    if (this.options.dataPlane) {
      // proxies left by a crashed run would share ports with their replacements (SO_REUSEPORT)
      const swept = await sweepProxies(this.options.dataPlane.runDir, this.log);
      if (swept) this.log.warn({ swept }, 'stopped proxies left by a previous run');
    }
    this.health.start();
    this.fleet.start();
    await this.detector.start();
    this.markAbsent();
    await this.commands.start();
    this.startedAt = new Date();
    this.log.info({ modems: this.slots.size }, 'supervisor started');
  }

  /** Modems this host had that are not plugged in any more are journaled as removed. */
  private markAbsent(): void {
    const present = new Set(this.detector.present.map((d) => d.usbPath));
    for (const record of this.remembered.values()) {
      if (record.state === 'removed' || (record.usbPath && present.has(record.usbPath))) continue;
      this.appendRemoved(record.imei, record.state, 'reconcile.absent', record.usbPath);
    }
  }

  private nextSeq(imei: string): number {
    const next = (this.seqs.get(imei) ?? 0) + 1;
    this.seqs.set(imei, next);
    return next;
  }

  private onDetection(events: DetectionEvent[]): void {
    const added: FleetDevice[] = [];
    const removed: string[] = [];
    for (const e of events) {
      if (e.type === 'device.removed') {
        removed.push(e.usbPath);
        continue;
      }
      if (e.type === 'device.changed' && e.device.ports.at === e.previous.ports.at) continue;
      if (e.device.fault || !e.device.ports.at) {
        this.alert({
          kind: 'device_unusable',
          severity: 'warning',
          message: `USB device ${e.device.vid}:${e.device.pid} at ${e.device.usbPath} has no usable AT port${e.device.fault ? ` (${e.device.fault})` : ''}`,
        });
        continue;
      }
      added.push({ usbPath: e.device.usbPath, atPort: e.device.ports.at, iface: e.device.net });
    }
    if (added.length || removed.length) this.fleet.send({ type: 'devices.changed', added, removed });
  }

  private startModem(device: FleetDevice): void {
    // a new tty at a known place: the old actor cannot use it
    if (this.slots.has(device.usbPath)) this.stopModem(device.usbPath);
    const log = this.log.child({ usbPath: device.usbPath });
    // the desired state of whatever modem was here last time; corrected once the IMEI is known
    const previous = [...this.remembered.values()].find((r) => r.usbPath === device.usbPath);
    let slot: ModemSlot | undefined = undefined;
    const runtime = new ModemRuntime({
      ...this.options.link,
      usbPath: device.usbPath,
      atPort: device.atPort,
      config: this.options.modem ?? {},
      desired: previous?.desired ?? 'enabled',
      log,
      onTransition: (t) => slot && this.onTransition(slot, t),
      onHealth: (signal) => slot && this.onHealth(slot, signal),
      onAlert: (alert) => this.alert(alert, slot?.imei ?? undefined),
      onCommandFinished: (result) => slot?.finished(result),
    });
    slot = new ModemSlot(
      device.usbPath,
      device.atPort,
      runtime,
      this.options.store.hostId,
      (record) => this.record(record),
      (imei) => this.nextSeq(imei),
      log,
    );
    slot.iface = device.iface;
    const presumed = this.lastAt.get(device.usbPath) ?? previous?.imei;
    if (presumed && this.seqs.has(presumed) && !this.byImei.has(presumed)) slot.presume(presumed);
    this.slots.set(device.usbPath, slot);
    const started = slot;
    // reported to the fleet after the current step: a modem can end inside a fleet action (forward)
    const report = (event: Parameters<typeof this.fleet.send>[0]): void =>
      queueMicrotask(() => {
        if (this.slots.get(device.usbPath) === started) this.fleet.send(event);
      });
    runtime.actor.subscribe({
      next: (snapshot) => {
        if (snapshot.status !== 'done') return;
        report({ type: 'modem.done', usbPath: device.usbPath });
        // a quick replug can end the old actor after detection already saw the device again
        later(() => void this.restartIfPresent(device.usbPath, started));
      },
      error: (err) => {
        log.error({ err }, 'modem actor crashed');
        if (this.slots.get(device.usbPath) === started)
          this.fleet.send({
            type: 'modem.crashed',
            usbPath: device.usbPath,
            error: coerceError(err).message,
          });
      },
    });
    runtime.start();
  }

  /**
   * A modem actor ended (its tty vanished) but detection still lists the device: a replug or a
   * re-enumeration quicker than the hotplug debounce, which detection reports as no change. The
   * tty is watched for a while; when it is back, a fresh actor starts.
   */
  private async restartIfPresent(usbPath: string, ended: ModemSlot): Promise<void> {
    for (let i = 0; i < 50; i++) {
      const device = this.detector.present.find((d) => d.usbPath === usbPath);
      const at = device?.ports.at;
      const another = (): boolean => (this.slots.get(usbPath) ?? ended) !== ended;
      if (this.stopped || !at || device.fault || another()) return;
      const back = await pathExists(at);
      if (back && !this.stopped && !another()) {
        this.fleet.send({
          type: 'devices.changed',
          added: [{ usbPath, atPort: at, iface: device.net }],
          removed: [],
        });
        return;
      }
      await sleep(200);
    }
  }

  private stopModem(usbPath: string): void {
    const slot = this.slots.get(usbPath);
    if (!slot) return;
    this.slots.delete(usbPath);
    if (slot.imei && this.byImei.get(slot.imei) === slot) this.byImei.delete(slot.imei);
    slot.abandon('device_removed');
    this.dataPlanes?.stop(slot);
    const done = slot.runtime
      .stop()
      .catch((err: unknown) => this.log.warn({ err, usbPath }, 'stopping a modem failed'))
      .finally(() => this.stopping.delete(done));
    this.stopping.add(done);
  }

  private onTransition(slot: ModemSlot, t: ModemTransition): void {
    const identity = t.snapshot.context.identity;
    if (identity && !slot.identityChecked) {
      slot.identityChecked = true;
      if (slot.presumed && slot.imei !== identity.imei) {
        // another modem than last time: the presumed one left this place
        const presumed = slot.imei;
        if (presumed) this.appendRemoved(presumed, t.from ?? 'detecting', 'reconcile.replaced', slot.usbPath);
        slot.unpresume();
      }
      if (!slot.identified) slot.imei = identity.imei;
      slot.transition(t);
      void this.identify(slot);
      return;
    }
    slot.transition(t);
    this.syncDataPlane(slot);
  }

  /** Online with an address, ports and a link: the data plane runs; otherwise it does not. */
  private syncDataPlane(slot: ModemSlot): void {
    if (slot.noPorts !== undefined) {
      const snapshot = slot.runtime.snapshot();
      // a modem that cannot have ports cannot be sold: fail closed, visibly, with its reason
      if (snapshot.status === 'active' && snapshot.matches('online'))
        slot.runtime.send({ type: 'dataplane.failed', reason: 'no_free_port', detail: slot.noPorts });
      return;
    }
    const allocation =
      slot.imei && slot.identified && !slot.presumed ? this.allocated.get(slot.imei) : undefined;
    this.dataPlanes?.sync(slot, allocation);
  }

  private record(record: TransitionRecord): void {
    this.events.onJournal?.(record);
    this.journal.append(record);
  }

  private appendRemoved(imei: string, from: string, event: string, usbPath: string | null): void {
    this.record({
      imei,
      seq: this.nextSeq(imei),
      from,
      to: 'removed',
      event,
      at: new Date(),
      host: this.options.store.hostId,
      detail: { usbPath },
    });
  }

  /**
   * Settles the journal position, then records the facts, applies the desired state and allocates
   * ports. The position comes from the database, or, while it is away, from what this process
   * knows (every modem of this host is loaded on start): the held transitions are written at once
   * and reach the spool. A modem new to this host waits for the database, even when it is
   * unplugged meanwhile, so that its transitions are journaled under the right numbers.
   */
  private async identify(slot: ModemSlot): Promise<void> {
    const identity = slot.identity();
    if (!identity) return;
    const store = this.options.store;
    const imei = identity.imei;
    let record: ModemRecord | null | undefined;
    for (let attempt = 0; record === undefined && !this.stopped; attempt++) {
      try {
        record = await store.modemRecord(imei);
      } catch (err) {
        if (this.seqs.has(imei)) break;
        this.log.warn(
          { err: coerceError(err), imei, attempt },
          'reading a new modem from the database failed',
        );
        await sleep(backoffDelay(attempt, 200, 5_000));
      }
    }
    if (record === undefined && !this.seqs.has(imei)) {
      this.log.error(
        { imei, usbPath: slot.usbPath },
        'stopped before the journal position of a new modem was known',
      );
      return;
    }
    if (record) this.seqs.set(imei, Math.max(this.seqs.get(imei) ?? 0, record.seq));
    const current = (): boolean => !this.stopped && this.slots.get(slot.usbPath) === slot;
    const other = this.byImei.get(imei);
    if (other && other !== slot && this.slots.get(other.usbPath) === other)
      this.alert(
        {
          kind: 'duplicate_imei',
          severity: 'critical',
          message: `IMEI ${imei} answers at ${slot.usbPath} and at ${other.usbPath}`,
        },
        imei,
      );
    if (current()) this.byImei.set(imei, slot);
    this.lastAt.set(slot.usbPath, imei);
    slot.identify(imei);
    const desired = record?.desired ?? this.remembered.get(imei)?.desired;
    if (desired && current() && desired !== slot.runtime.snapshot().context.desired)
      slot.runtime.send({ type: desired === 'disabled' ? 'command.disable' : 'command.enable', id: 0 });
    for (let attempt = 0; current(); attempt++) {
      try {
        const { previousIccid } = await store.upsertModem({
          imei,
          hostId: store.hostId,
          usbPath: slot.usbPath,
          model: identity.model,
          firmware: identity.firmware,
          iccid: identity.iccid,
          imsi: identity.imsi,
        });
        if (previousIccid && identity.iccid && previousIccid !== identity.iccid)
          this.alert(
            {
              kind: 'sim_swap',
              severity: 'warning',
              message: `the SIM of modem ${imei} changed: ICCID ${previousIccid} → ${identity.iccid}`,
            },
            imei,
          );
        const allocation = await store.allocate(imei);
        this.allocated.set(imei, allocation);
        this.syncDataPlane(slot);
        this.events.onAllocated?.(allocation);
        this.events.onIdentified?.(imei, slot.usbPath);
        return;
      } catch (err) {
        const e = coerceError(err);
        if ((e as { code?: string }).code === 'no_free_port') {
          this.alert({ kind: 'no_free_port', severity: 'critical', message: e.message }, imei);
          slot.noPorts = e.message;
          later(() => this.syncDataPlane(slot));
          this.events.onIdentified?.(imei, slot.usbPath);
          return;
        }
        this.log.warn({ err: e, imei, attempt }, 'recording a modem in the database failed; retrying');
        await sleep(backoffDelay(attempt, 200, 5_000));
      }
    }
  }

  private onHealth(slot: ModemSlot, signal: SignalSample): void {
    if (!slot.imei || !slot.identified) return;
    this.health.add({
      imei: slot.imei,
      at: new Date(),
      rssi: signal.rssi,
      rsrp: signal.rsrp,
      rsrq: signal.rsrq,
      sinr: signal.sinr,
      technology: signal.technology,
      operator: slot.runtime.snapshot().context.operator,
    });
  }

  private alert(alert: AlertInfo, imei?: string): void {
    this.log.warn({ alert, imei }, 'alert');
    this.alerts.push({ ...alert, ...(imei ? { imei } : {}) });
  }

  private async execute(command: Command): Promise<CommandOutcome> {
    const slot = this.byImei.get(command.imei);
    if (!slot || slot.runtime.snapshot().status !== 'active')
      return { ok: false, result: { error: 'not_present' } };
    if (command.kind === 'disable' || command.kind === 'enable')
      await this.options.store.setDesired(command.imei, command.kind === 'disable' ? 'disabled' : 'enabled');
    const outcome = await slot.command(command.id, command.kind, this.options.commandTimeoutMs ?? 600_000);
    if (command.kind !== 'rotate' || !outcome.ok) return outcome;
    return this.dataPlanes ? this.dataPlanes.verifyRotation(slot, outcome) : outcome;
  }

  private async stopAllModems(): Promise<void> {
    await Promise.resolve(); // after the starts and stops the fleet queued before `stop`
    for (const usbPath of [...this.slots.keys()]) this.stopModem(usbPath);
    await Promise.all([...this.stopping]);
  }

  /** Graceful: commands, detection, modems, then the writers flush. Reports every failed step. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const failures: unknown[] = [];
    const step = async (name: string, fn: () => Promise<void> | void): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        failures.push(err);
        this.log.error({ err, step: name }, 'shutdown step failed');
      }
    };
    clearInterval(this.heartbeat);
    await step('commands', () => this.commands.stop());
    await step('detection', () => this.detector.stop());
    await step('modems', async () => {
      this.fleet.send({ type: 'stop' });
      await new Promise<void>((resolve) => {
        if (this.fleet.getSnapshot().status === 'done') return resolve();
        this.fleet.subscribe((s) => s.status === 'done' && resolve());
      });
    });
    await step('health', () => this.health.stop());
    await step('journal', () => this.journal.stop());
    await step('alerts', () => this.alerts.stop());
    await step('host', () => this.options.store.stopHost());
    if (failures.length) throw new AggregateError(failures, `${failures.length} shutdown step(s) failed`);
  }
}
