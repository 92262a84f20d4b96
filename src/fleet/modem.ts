import { journalStep } from '../../machines/modemJournal.js';
import type { CommandResult, ModemConfig, ModemIdentity } from '../../machines/modemTypes.js';
import { modemLogger, type Logger } from '../log.js';
import type { ModemRecord } from '../store/reconcile.js';
import type { Store } from '../store/store.js';
import type { Allocation, Command, TransitionRecord } from '../store/types.js';
import { NO_ACCESS, type ProxyAccess } from '../proxyAccess.js';
import { coerceError } from '../util/errors.js';
import { backoffDelay, sleep } from '../util/time.js';
import { addressProblem, hostAddresses } from '../net/addressGuard.js';
import { ModemDataPlane, type DataPlaneOptions } from './dataPlane.js';
import {
  echoUrls,
  readPublicAddress,
  type EgressOptions,
  type HostEgress,
  type PublicReading,
} from './egress.js';
import type { CommandOutcome, FleetEvents } from './events.js';
import type { LeftProxies } from './handover.js';
import type { ModemDirectory } from './modemDirectory.js';
import type { ModemLinkOptions } from './modemLink.js';
import { ModemRuntime, type ModemOutput, type ModemSnapshot, type ModemTransition } from './modemRuntime.js';
import type { NoReuse } from './rotationSchedule.js';
import type { FleetPolicy } from '../policy.js';

/** Short journal names for xstate's internal events: `done.probe`, `error.connect`, `after.backoff`. */
export function eventName(type: string): string {
  const m = /^xstate\.(done|error)\.actor\.(.+)$/.exec(type) ?? /^xstate\.(after)\.([^.]+)\./.exec(type);
  return (m ? `${m[1]}.${m[2]}` : type).slice(0, 64);
}

/** A port this young that does not answer is still starting, not silent. */
const STARTING_MS = 15_000;

export type FleetDataPlaneOptions = DataPlaneOptions & { egress?: EgressOptions | undefined };

/** What a device is to the fleet: where it sits and its ports, from detection. */
export interface ModemDevice {
  usbPath: string;
  atPort: string;
  /** The network interface, when detection found one. */
  iface?: string | undefined;
  /** Every option-bound tty, the preferred AT port first (probed when the preferred one is silent). */
  atCandidates?: readonly string[] | undefined;
  /** The USB device's sysfs directory (the USB-level reset). */
  sysPath?: string | undefined;
}

/** The part of the store one modem uses. */
export type ModemStore = Pick<
  Store,
  | 'hostId'
  | 'modemRecord'
  | 'upsertModem'
  | 'allocate'
  | 'setDesired'
  | 'recordAddress'
  | 'addressSeenWithin'
  | 'servedAccess'
>;

export interface ModemDeps {
  store: ModemStore;
  events: FleetEvents;
  directory: ModemDirectory<Modem>;
  policy: FleetPolicy;
  modem?: Partial<ModemConfig> | undefined;
  link?: Omit<ModemLinkOptions, 'atPort' | 'atCandidates' | 'usbPath' | 'sysPath' | 'log'> | undefined;
  dataPlane?: FleetDataPlaneOptions | undefined;
  /** Proxies a previous run left serving, for the data planes to adopt (or replace). */
  leftProxies?: Pick<LeftProxies, 'claim' | 'discard'> | undefined;
  /** The host's own public address and whether the echo endpoints answer (with an egress guard). */
  hostEgress?: HostEgress | undefined;
  /** A rotation's new public address must not have been seen within these hours (config). */
  noReuse?: NoReuse | undefined;
  log: Logger;
  /** The supervisor is stopping: no new work starts. */
  stopping: () => boolean;
  /** A teardown (data plane, actor) the supervisor waits for on stop. */
  track: (done: Promise<void>) => void;
}

/** How a modem's actor ended: done (removed) or crashed. */
export type ModemEnd = { crashed?: undefined } | { crashed: string };

/**
 * One modem, owned whole: its runtime (the actor over its AT link), its identity and journal
 * numbering, its allocation, its data plane and egress guard, and the commands waiting for it.
 * Nothing else writes its fields. The work is split three ways: `ModemLink` is the I/O (AT port,
 * driver, effects), `ModemRuntime` the machine wired to it (what the modem does, usable alone),
 * and `Modem` what the farm does with it: journal (by the rule of machines/modemJournal.ts),
 * database record and ports, routing and proxies, commands, events. A replug makes a new `Modem`;
 * what outlives it (journal position, last place) is in the `ModemDirectory`.
 */
export class Modem {
  readonly usbPath: string;
  readonly atPort: string;
  readonly runtime: ModemRuntime;
  /** The net interface now: detection re-resolves it after a rename or a late qmi_wwan bind. */
  private ifaceNow: string | undefined;
  /** Egress checks in a row that got no answer through the ports (1: redial; 2: the ladder). */
  private silentChecks = 0;
  /** The public address last seen through this modem's port (null: not yet). */
  private publicIpNow: string | null = null;
  /** When the data plane came up: a port still starting is not silent. */
  private upAt = 0;
  /** The modem address last found acceptable (src/net/addressGuard.ts), and one being checked. */
  private addressChecked: string | undefined;
  private addressChecking: string | undefined;
  /** Resolves when the actor ended (removed: done; or crashed). */
  readonly ended: Promise<ModemEnd>;
  private imeiValue: string | null = null;
  /** Journaled under `imei` (known over AT, or presumed from the last modem at this place). */
  private identified = false;
  /** The IMEI is the one last seen at this USB path, not yet confirmed over AT. */
  private presumed = false;
  /** The IMEI read over AT was looked at (identification runs once per Modem). */
  private identityChecked = false;
  /** The last journaled state (the rule folds poll loops); null before the first. */
  private journaled: string | null = null;
  private held: Omit<TransitionRecord, 'imei' | 'seq' | 'host'>[] = [];
  private allocationValue: Allocation | undefined;
  /** Logins besides its own, allowlist, speed limits (read with the allocation, then per change). */
  private accessValue: ProxyAccess = NO_ACCESS;
  /** No ports were free: it cannot serve (it goes to `error` once online). */
  private noPorts: string | undefined;
  private dataPlane: ModemDataPlane | undefined;
  private egressTimer: NodeJS.Timeout | undefined;
  private readonly waiting = new Map<number, (outcome: CommandOutcome) => void>();
  private retired = false;
  private readonly log: Logger;
  private readonly identifyLog: (imei: string) => void;
  private endedWith: (end: ModemEnd) => void = () => undefined;

  constructor(
    device: ModemDevice,
    private readonly deps: ModemDeps,
  ) {
    this.usbPath = device.usbPath;
    this.atPort = device.atPort;
    this.ifaceNow = device.iface;
    const { log, identify } = modemLogger(deps.log, device.usbPath);
    this.log = log;
    this.identifyLog = identify;
    this.runtime = new ModemRuntime({
      ...deps.link,
      usbPath: device.usbPath,
      atPort: device.atPort,
      atCandidates: device.atCandidates,
      sysPath: device.sysPath,
      netIface: () => this.ifaceNow,
      config: deps.modem ?? {},
      // the desired state of whatever modem was here last time; corrected once the IMEI is known
      desired: deps.directory.rememberedAt(device.usbPath)?.desired ?? 'enabled',
      log,
      output: (output) => this.onOutput(output),
    });
    this.ended = new Promise((resolve) => (this.endedWith = resolve));
  }

  get imei(): string | null {
    return this.imeiValue;
  }

  get iface(): string | undefined {
    return this.ifaceNow;
  }

  /**
   * Detection saw this device change without a new AT port: its net interface appeared late (qmi_wwan
   * binds after the ttys) or was renamed by udev. The data plane moves to the new name (its routes
   * named the old one); a new interface starts down, so an online modem redials onto it.
   */
  updateDevice(device: Pick<ModemDevice, 'iface'>): void {
    if (device.iface === this.ifaceNow) return;
    const was = this.ifaceNow;
    this.ifaceNow = device.iface;
    this.log.info({ iface: device.iface ?? null, was: was ?? null }, 'net interface changed');
    if (!this.dataPlane) return;
    this.stopDataPlane();
    const snapshot = this.snapshot();
    if (snapshot.status === 'active' && snapshot.matches('online'))
      this.runtime.send({
        type: 'call.lost',
        detail: `net interface ${was ?? '?'} is now ${device.iface ?? 'gone'}`,
      });
  }

  get allocation(): Allocation | undefined {
    return this.allocationValue;
  }

  /** Pids of the proxy processes serving this modem now (tests, diagnostics). */
  get proxyPids(): number[] {
    return this.dataPlane?.pids ?? [];
  }

  /** Its proxy processes run and listen on its ports (the demo waits for this before it prints them). */
  get proxyServing(): boolean {
    return this.dataPlane?.serving ?? false;
  }

  /** Its proxy is the one a previous run handed over (tests, diagnostics). */
  get proxyAdopted(): boolean {
    return this.dataPlane?.adopted ?? false;
  }

  snapshot(): ModemSnapshot {
    return this.runtime.snapshot();
  }

  /** Top-level state (`online`, `error`, ...), or `stopped` once the actor ended. */
  get top(): string {
    const snapshot = this.snapshot();
    if (snapshot.status !== 'active') return 'stopped';
    return typeof snapshot.value === 'string' ? snapshot.value : (Object.keys(snapshot.value)[0] ?? '?');
  }

  start(): void {
    const presumed = this.deps.directory.presumedAt(this.usbPath);
    if (presumed) {
      this.imeiValue = presumed;
      this.identified = true;
      this.presumed = true;
      this.identifyLog(presumed);
    }
    this.runtime.actor.subscribe({
      next: (snapshot) => {
        if (snapshot.status === 'done') this.endedWith({});
      },
      error: (err) => {
        this.log.error({ err }, 'modem actor crashed');
        this.endedWith({ crashed: coerceError(err).message });
      },
    });
    this.runtime.start();
  }

  /**
   * Retires this Modem: waiting commands fail, the data plane and the actor stop (the AT port is
   * closed; no AT command is sent, so the data call stays as it is). Idempotent. `handover` (the
   * supervisor restarts): the data plane is left serving for the next run instead of stopped.
   */
  stop(mode: 'stop' | 'handover' = 'stop'): Promise<void> {
    if (this.retired) return Promise.resolve();
    this.retired = true;
    if (this.imeiValue) this.deps.directory.release(this.imeiValue, this);
    for (const resolve of [...this.waiting.values()])
      resolve({ ok: false, result: { error: 'device_removed' } });
    this.stopDataPlane(mode);
    return this.runtime.stop();
  }

  /** Still the live Modem of its place, and the supervisor not stopping. */
  private get live(): boolean {
    return !this.retired && !this.deps.stopping();
  }

  // --- commands ---------------------------------------------------------------------------------

  /** Carries out an operator command; resolves with its outcome (never rejects). */
  async command(command: Command): Promise<CommandOutcome> {
    if (command.kind === 'credentials') return this.applyCredentials();
    if (this.snapshot().status !== 'active') return { ok: false, result: { error: 'not_present' } };
    if (command.kind === 'disable' || command.kind === 'enable') {
      // the wish is stored first (a restart keeps it); a database blip is waited out, not failed on
      const desired = command.kind === 'disable' ? 'disabled' : 'enabled';
      const policy = this.deps.policy;
      for (let attempt = 0; ; attempt++) {
        try {
          await this.deps.store.setDesired(command.imei, desired);
          break;
        } catch (err) {
          if (attempt >= 8 || !this.live)
            return {
              ok: false,
              result: { error: 'database_unavailable', message: coerceError(err).message.slice(0, 300) },
            };
          await sleep(backoffDelay(attempt, policy.retryBaseMs, policy.retryCapMs));
        }
      }
    }
    const before = this.publicIpNow;
    const outcome = await this.send(command.id, command.kind, this.deps.policy.commandTimeoutMs);
    if (command.kind !== 'rotate' || !outcome.ok) return outcome;
    return this.verifyRotation(command, outcome, before);
  }

  /**
   * A `credentials` command: the allocation (its own login) and the access (other logins,
   * allowlist, speed limits) are read again, as they were stored with the command, and applied:
   * the access live (src/fleet/dataPlane.ts `setAccess`), a new password of its own by replacing
   * the proxy; the modem stays online and its routing untouched. The result never holds a password
   * (command results are visible to every token).
   */
  private async applyCredentials(): Promise<CommandOutcome> {
    const imei = this.imeiValue;
    if (!imei || !this.allocationValue) return { ok: true, result: { applied: false } };
    let allocation: Allocation;
    let access: ProxyAccess;
    try {
      allocation = await this.deps.store.allocate(imei);
      access = await this.deps.store.servedAccess(imei);
    } catch (err) {
      const message = coerceError(err).message.slice(0, 300);
      return { ok: false, result: { error: 'database_unavailable', message } };
    }
    this.allocationValue = allocation;
    this.accessValue = access;
    const facts = {
      username: allocation.proxyUser,
      logins: access.logins.length,
      allowlist: access.allowlist.length,
      limits: access.limits,
    };
    const dataPlane = this.dataPlane;
    if (!dataPlane) return { ok: true, result: { applied: false, ...facts } };
    try {
      await dataPlane.setAccess(access);
    } catch (err) {
      const message = coerceError(err).message.slice(0, 300);
      this.log.warn({ err: coerceError(err) }, 'new proxy access not applied');
      return { ok: false, result: { error: 'access_not_applied', message, ...facts } };
    }
    try {
      await dataPlane.setCredentials(allocation.proxyUser, allocation.proxyPassword);
    } catch (err) {
      const message = coerceError(err).message.slice(0, 300);
      this.log.warn({ err: coerceError(err) }, 'new proxy credentials not applied');
      return { ok: false, result: { error: 'credentials_not_applied', message } };
    }
    const unshaped =
      dataPlane.shapingPlace === 'none' &&
      (access.limits.downloadKbps !== null || access.limits.uploadKbps !== null);
    this.log.info({ ...facts, shaping: dataPlane.shapingPlace }, 'proxy access applied');
    if (unshaped)
      return {
        ok: false,
        result: {
          error: 'shaping_unavailable',
          message: 'the modem has no link of its own here and its backend has no speed limits of its own',
          ...facts,
        },
      };
    return { ok: true, result: { applied: true, shaping: dataPlane.shapingPlace, ...facts } };
  }

  /** Sends a command to the machine; resolves with its result, or fails after `timeoutMs`. */
  private send(id: number, kind: CommandResult['kind'], timeoutMs: number): Promise<CommandOutcome> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve({ ok: false, result: { error: 'timeout', timeoutMs } });
      }, timeoutMs);
      timer.unref();
      this.waiting.set(id, (outcome) => {
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(outcome);
      });
      this.runtime.send({ type: `command.${kind}`, id });
    });
  }

  /**
   * With the egress guard, a rotation is done only when the public address seen through the modem's
   * own port differs from the one before (behind carrier NAT the modem's own address says nothing
   * about it). The same public address again: the modem rotates again, up to `rotationAttempts`
   * rotations, then the command fails with `same_public_ip` (the modem stays online).
   */
  private async verifyRotation(
    command: Command,
    outcome: CommandOutcome,
    previousPublicIp: string | null,
  ): Promise<CommandOutcome> {
    const egress = this.deps.dataPlane?.egress;
    if (!egress || typeof outcome.result['wanIp'] !== 'string') return outcome;
    const previousIp = outcome.result['previousIp'] ?? null;
    const limit = this.snapshot().context.config.rotationAttempts;
    let attempts = 0;
    for (let rotation = 1; ; rotation++) {
      attempts += Number(outcome.result['attempts'] ?? 1);
      const wanIp = String(outcome.result['wanIp']);
      const reading = await this.readAfterRotation(egress, wanIp);
      const facts = { wanIp, previousIp, previousPublicIp, attempts };
      if (reading.address === null)
        return { ok: false, result: { ...facts, error: 'egress_not_verified', publicIp: null } };
      // on a carrier that NATs each connection to another address, any sample equal to the old one
      // means the same pool: not a new address
      const same = previousPublicIp !== null && reading.samples.includes(previousPublicIp);
      const reused = !same && (await this.seenRecently(command.imei, reading.address));
      if (!same && !reused) {
        await this.notePublic(reading, wanIp);
        return {
          ok: true,
          result: {
            ...facts,
            publicIp: reading.address,
            verifiedThroughPort: true,
            ...(reading.stable ? {} : { publicIpStable: false }),
          },
        };
      }
      if (rotation >= limit || !this.live) {
        const hours = this.deps.noReuse?.hours;
        this.alert(
          'rotation_failed',
          'warning',
          reused
            ? `rotation of ${command.imei} got only public addresses seen within ${hours} h (last ${reading.address}) after ${rotation} rotations; the modem stays online`
            : `rotation of ${command.imei} kept public address ${previousPublicIp} after ${rotation} rotations; the modem stays online`,
        );
        // the modem now serves with the address it got: the row and history show it
        if (reused) await this.notePublic(reading, wanIp);
        return {
          ok: false,
          result: reused
            ? { ...facts, error: 'reused_public_ip', publicIp: reading.address, noReuseHours: hours }
            : { ...facts, error: 'same_public_ip', publicIp: reading.address },
        };
      }
      this.log.info(
        { publicIp: reading.address, rotation },
        reused
          ? 'the carrier handed back a public address seen recently: rotating again'
          : 'the carrier handed back the same public address: rotating again',
      );
      outcome = await this.send(command.id, 'rotate', this.deps.policy.commandTimeoutMs);
      if (!outcome.ok) return { ok: false, result: { ...outcome.result, previousPublicIp, attempts } };
    }
  }

  /**
   * "No reuse within H hours" (config `rotation.noReuseHours`): `address` was seen within the window
   * on this modem (or, scope `farm`, on any). A database error counts as not seen: the rotation is
   * not failed for a lookup.
   */
  private async seenRecently(imei: string, address: string): Promise<boolean> {
    const noReuse = this.deps.noReuse;
    if (!noReuse) return false;
    try {
      return await this.deps.store.addressSeenWithin(
        noReuse.scope === 'farm' ? null : imei,
        address,
        noReuse.hours,
      );
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'address history not read; the new address counts as new');
      return false;
    }
  }

  /** The public address once the port serves the new private address (within rotationVerifyMs). */
  private async readAfterRotation(egress: EgressOptions, wanIp: string): Promise<PublicReading> {
    const deadline = Date.now() + this.deps.policy.rotationVerifyMs;
    while (Date.now() < deadline && this.live) {
      const dataPlane = this.dataPlane;
      if (dataPlane && this.snapshot().context.wanIp === wanIp) {
        const reading = await readPublicAddress(egress, dataPlane.endpoint);
        if (reading.address !== null && !this.deps.hostEgress?.isHost(reading.address)) return reading;
      }
      await sleep(250);
    }
    return { address: null, stable: false, samples: [] };
  }

  /**
   * A public address seen through the port: stored (history and the modem row) and announced when it
   * changed. An unstable reading (per-connection NAT) does not replace a known address: `publicIp`
   * does not flap with every connection.
   */
  private async notePublic(reading: PublicReading, wanIp: string): Promise<void> {
    const imei = this.imeiValue;
    const address = reading.address;
    if (!imei || !address) return;
    if (!reading.stable && this.publicIpNow !== null && reading.samples.includes(this.publicIpNow)) return;
    const previous = this.publicIpNow;
    this.publicIpNow = address;
    try {
      await this.deps.store.recordAddress(imei, address, wanIp);
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, 'public address not stored; stored at the next check');
    }
    if (previous !== address) {
      if (previous !== null) this.log.info({ publicIp: address, previous }, 'public address changed');
      this.deps.events.emit('public.changed', { imei, publicIp: address, previous, wanIp });
    }
  }

  // --- what the machine reports -----------------------------------------------------------------

  private onOutput(output: ModemOutput): void {
    switch (output.type) {
      case 'transition':
        return this.onTransition(output.transition);
      case 'health':
        if (!this.imeiValue || !this.identified) return;
        return this.deps.events.emit('health', {
          imei: this.imeiValue,
          at: new Date(),
          technology: output.signal.technology,
          rssi: output.signal.rssi,
          rsrp: output.signal.rsrp,
          rsrq: output.signal.rsrq,
          // stored, shown and sent in dB (the raw `+QCSQ` value is the modem's scale: sql/0006)
          sinr: output.signal.sinrDb,
          operator: this.snapshot().context.operator,
        });
      case 'alert':
        return this.alert(output.alert.kind, output.alert.severity, output.alert.message);
      case 'commandFinished':
        return this.waiting.get(output.result.id)?.({ ok: output.result.ok, result: output.result.result });
    }
  }

  private alert(kind: string, severity: 'info' | 'warning' | 'critical', message: string): void {
    this.deps.events.emit('alert', { alert: { kind, severity, message }, imei: this.imeiValue ?? undefined });
  }

  private onTransition(t: ModemTransition): void {
    const identity = t.snapshot.context.identity;
    if (identity && !this.identityChecked) {
      this.identityChecked = true;
      if (this.presumed && this.imeiValue !== identity.imei) {
        // another modem than last time: the presumed one left this place
        const presumed = this.imeiValue;
        if (presumed)
          journalRemoved(
            this.deps,
            presumed,
            this.journaled ?? 'detecting',
            'reconcile.replaced',
            this.usbPath,
          );
        this.imeiValue = null;
        this.identified = false;
        this.presumed = false;
      }
      if (!this.identified) this.imeiValue = identity.imei;
      this.journal(t);
      void this.identify(identity);
      return;
    }
    this.journal(t);
    this.syncDataPlane();
  }

  // --- journal ----------------------------------------------------------------------------------

  /** Journals a lifecycle transition (poll loops are not: machines/modemJournal.ts). */
  private journal(t: ModemTransition): void {
    const to = journalStep(this.journaled, t.to);
    if (to === null) return;
    const from = this.journaled;
    this.journaled = to;
    const ctx = t.snapshot.context;
    const top = to.split('.')[0];
    const entry = {
      from,
      to,
      event: eventName(t.event),
      at: new Date(),
      reason: top === 'error' ? (ctx.reason ?? undefined) : undefined,
      wanIp: top === 'online' ? (ctx.wanIp ?? undefined) : undefined,
      detail: {
        usbPath: this.usbPath,
        ...(ctx.reason ? { reason: ctx.reason } : {}),
        ...(ctx.lastError ? { lastError: ctx.lastError } : {}),
        ...(ctx.wanIp ? { wanIp: ctx.wanIp } : {}),
        ...(ctx.registration ? { registration: ctx.registration } : {}),
      },
    };
    if (this.identified) return this.write(entry);
    // held while the IMEI is unknown (a modem that never answers is not journaled)
    if (this.held.length < this.deps.policy.maxUnidentifiedTransitions) this.held.push(entry);
    else this.log.warn({ to }, 'transition of an unidentified modem not journaled (too many held)');
  }

  /**
   * The traffic monitor closed this modem's port (`quota_exceeded`, `expired`) or reopened it
   * (null): journaled as an entry of the state it is in (the machine does not change: the modem
   * stays online, its ports refuse customers).
   */
  journalPort(reason: string | null, detail: string): void {
    const state = this.journaled;
    if (!this.identified || state === null || this.retired) return;
    this.write({
      from: state,
      to: state,
      event: reason ? 'port.closed' : 'port.reopened',
      at: new Date(),
      reason: reason ?? undefined,
      detail: { usbPath: this.usbPath, ...(reason ? { reason } : {}), message: detail.slice(0, 200) },
    });
  }

  private write(entry: Omit<TransitionRecord, 'imei' | 'seq' | 'host'>): void {
    const imei = this.imeiValue;
    if (!imei) return;
    this.deps.events.emit('transition', {
      ...entry,
      imei,
      seq: this.deps.directory.nextSeq(imei),
      host: this.deps.store.hostId,
    });
  }

  // --- identification ---------------------------------------------------------------------------

  /**
   * Settles the journal position, then records the facts, applies the desired state and allocates
   * ports. The position comes from the database, or, while it is away, from what this process
   * knows (every modem of this host is loaded on start): the held transitions are written at once
   * and reach the spool. A modem new to this host waits for the database, even when it is
   * unplugged meanwhile, so that its transitions are journaled under the right numbers.
   */
  private async identify(identity: ModemIdentity): Promise<void> {
    const { store, directory, policy } = this.deps;
    const imei = identity.imei;
    let record: ModemRecord | null | undefined;
    for (let attempt = 0; record === undefined && !this.deps.stopping(); attempt++) {
      try {
        record = await store.modemRecord(imei);
      } catch (err) {
        if (directory.knows(imei)) break;
        this.log.warn(
          { err: coerceError(err), imei, attempt },
          'reading a new modem from the database failed',
        );
        await sleep(backoffDelay(attempt, policy.retryBaseMs, policy.retryCapMs));
      }
    }
    if (record === undefined && !directory.knows(imei)) {
      this.log.error({ imei }, 'stopped before the journal position of a new modem was known');
      return;
    }
    if (record) directory.settle(imei, record.seq);
    if (this.live) {
      const other = directory.claim(imei, this);
      if (other && !other.retired)
        this.alert(
          'duplicate_imei',
          'critical',
          `IMEI ${imei} answers at ${this.usbPath} and at ${other.usbPath}`,
        );
    }
    directory.placed(imei, this.usbPath);
    this.imeiValue = imei;
    this.identified = true;
    this.presumed = false;
    this.identifyLog(imei);
    for (const entry of this.held.splice(0)) this.write(entry);
    const desired = record?.desired ?? directory.desired(imei);
    if (desired && this.live && desired !== this.snapshot().context.desired)
      this.runtime.send({ type: desired === 'disabled' ? 'command.disable' : 'command.enable', id: 0 });
    for (let attempt = 0; this.live; attempt++) {
      try {
        const { previousIccid } = await store.upsertModem({
          imei,
          hostId: store.hostId,
          usbPath: this.usbPath,
          model: identity.model,
          firmware: identity.firmware,
          iccid: identity.iccid,
          imsi: identity.imsi,
        });
        if (previousIccid && identity.iccid && previousIccid !== identity.iccid)
          this.alert(
            'sim_swap',
            'warning',
            `the SIM of modem ${imei} changed: ICCID ${previousIccid} → ${identity.iccid}`,
          );
        this.allocationValue = await store.allocate(imei);
        this.accessValue = await store.servedAccess(imei);
        this.syncDataPlane();
        this.deps.events.emit('allocated', this.allocationValue);
        this.deps.events.emit('identified', { imei, usbPath: this.usbPath });
        return;
      } catch (err) {
        const e = coerceError(err);
        if ((e as { code?: string }).code === 'no_free_port') {
          this.alert('no_free_port', 'critical', e.message);
          this.noPorts = e.message;
          queueMicrotask(() => this.syncDataPlane());
          this.deps.events.emit('identified', { imei, usbPath: this.usbPath });
          return;
        }
        this.log.warn({ err: e, imei, attempt }, 'recording a modem in the database failed; retrying');
        await sleep(backoffDelay(attempt, policy.retryBaseMs, policy.retryCapMs));
      }
    }
  }

  // --- data plane -------------------------------------------------------------------------------

  /** Online with an address, ports and a link: the data plane runs; otherwise it does not. */
  private syncDataPlane(): void {
    const snapshot = this.snapshot();
    const online = snapshot.status === 'active' && snapshot.matches('online');
    if (this.noPorts !== undefined) {
      // a modem that cannot have ports cannot be sold: fail closed, visibly, with its reason
      if (online)
        this.runtime.send({ type: 'dataplane.failed', reason: 'no_free_port', detail: this.noPorts });
      return;
    }
    const options = this.deps.dataPlane;
    if (!options) return;
    const known = this.identified && !this.presumed ? this.imeiValue : null;
    // a modem that will not serve soon does not keep a previous run's proxy waiting for it
    if (known && !['detecting', 'initializing', 'online', 'stopped'].includes(this.top))
      this.deps.leftProxies?.discard(known, `its modem is ${this.top}`);
    const wanIp = snapshot.context.wanIp;
    const allocation = this.identified && !this.presumed ? this.allocationValue : undefined;
    const link = this.ifaceNow ?? (options.routing === false ? 'lo' : undefined);
    if (!(online && wanIp && allocation && link && this.live)) {
      if (!online) this.stopDataPlane();
      return;
    }
    // an address from the modem reaches `ip addr`/`ip rule` only once checked (each new one)
    if (this.addressChecked !== wanIp) return void this.checkAddress(wanIp, link, options);
    if (this.dataPlane) return this.dataPlane.changeAddress(wanIp);
    const imei = allocation.imei;
    this.dataPlane = new ModemDataPlane(
      options,
      imei,
      link,
      allocation,
      wanIp,
      {
        onProxyFailed: (detail) => {
          this.alert('proxy_failed', 'critical', `proxy of ${imei}: ${detail}`);
          this.runtime.send({ type: 'dataplane.failed', reason: 'proxy_failed', detail });
        },
        onProxyRestart: () => this.deps.events.emit('proxy.restarted', { imei }),
        onRoutingProblem: (detail) => {
          if (detail) this.log.warn({ problem: detail }, 'routing not as applied; retrying');
        },
      },
      this.log,
      this.accessValue,
      // the proxy a previous run left for this modem: adopted when it is what this one starts
      this.deps.leftProxies?.claim(imei),
    );
    this.dataPlane.start();
    this.upAt = Date.now();
    this.silentChecks = 0;
    this.deps.events.emit('dataplane.up', {
      imei,
      iface: link,
      wanIp,
      socksPort: allocation.socksPort,
      httpPort: allocation.httpPort,
    });
    // the public address is learned as soon as the port serves
    this.scheduleEgressCheck(500);
  }

  /** The address this modem's data plane serves with (other modems' guards refuse it). */
  get servedAddress(): string | undefined {
    return this.dataPlane ? (this.snapshot().context.wanIp ?? undefined) : undefined;
  }

  /**
   * Input from the modem checked before it reaches routing: an address no carrier gives (see
   * `addressProblem`) is refused with a critical alert and the modem goes to `error`
   * (`hostile_address`); the data plane never sees it. `ip` failing to list the host's addresses
   * is retried, not taken as a pass.
   */
  private async checkAddress(wanIp: string, link: string, options: FleetDataPlaneOptions): Promise<void> {
    if (this.addressChecking === wanIp) return;
    this.addressChecking = wanIp;
    let problem: string | null;
    try {
      const otherModems = new Set<string>();
      for (const other of this.deps.directory.allServing()) {
        const address = other === this ? undefined : other.servedAddress;
        if (address) otherModems.add(address);
      }
      const host = await hostAddresses({ netns: options.netns, except: link, ...options.ip });
      problem = addressProblem(wanIp, {
        allowLoopback: options.routing === false,
        otherModems,
        hostAddresses: host,
      });
    } catch (err) {
      this.log.warn({ err: coerceError(err) }, "the host's addresses not read; checking the modem's again");
      this.addressChecking = undefined;
      setTimeout(() => this.syncDataPlane(), 1_000).unref();
      return;
    }
    this.addressChecking = undefined;
    if (!this.live || this.snapshot().context.wanIp !== wanIp) return this.syncDataPlane();
    if (problem !== null) {
      const detail = `the modem reported ${wanIp}: ${problem}; refused, never routed`;
      this.alert('hostile_address', 'critical', detail);
      this.stopDataPlane();
      this.runtime.send({ type: 'dataplane.failed', reason: 'hostile_address', detail });
      return;
    }
    this.addressChecked = wanIp;
    this.syncDataPlane();
  }

  /**
   * Tears the data plane down (proxy, then routing); the supervisor waits for it on stop. A
   * handover leaves it serving for the next run.
   */
  private stopDataPlane(mode: 'stop' | 'handover' = 'stop'): void {
    const dataPlane = this.dataPlane;
    this.dataPlane = undefined;
    clearTimeout(this.egressTimer);
    if (!dataPlane) return;
    this.deps.events.emit('dataplane.down', { imei: dataPlane.imei });
    if (mode === 'handover') return dataPlane.handover();
    this.deps.track(
      dataPlane.stop().catch((err: unknown) => this.log.warn({ err }, 'stopping a data plane failed')),
    );
  }

  private scheduleEgressCheck(delayMs?: number): void {
    const egress = this.deps.dataPlane?.egress;
    if (!egress) return;
    clearTimeout(this.egressTimer);
    this.egressTimer = setTimeout(() => void this.checkEgress(egress), delayMs ?? egress.intervalMs);
    this.egressTimer.unref();
  }

  /** The modem is rotating or redialling: its call is down or changing on purpose. */
  private callChanging(): boolean {
    const snapshot = this.snapshot();
    return snapshot.matches({ online: 'rotating' }) || snapshot.matches({ online: 'redialing' });
  }

  /**
   * The egress guard. Through the modem's own SOCKS port an echo endpoint sees the modem's public
   * address: behind carrier NAT not its own (private) one, and possibly shared with other modems.
   * It leaks when that is the host's own public address (learned through the management route):
   * then it stops serving (`error`, `egress_mismatch`). A new public address without a rotation is
   * recorded, not an error. No answer: when the echo endpoint does not answer the host either, one
   * farm alert and no modem is touched; otherwise routing is re-applied and the call redialled, and
   * no answer again goes to the recovery ladder.
   */
  private async checkEgress(egress: EgressOptions): Promise<void> {
    const dataPlane = this.dataPlane;
    const wanIp = this.snapshot().context.wanIp;
    if (!dataPlane || !wanIp || !this.live) return;
    // a rotation or a redial takes the call down on purpose: silence then is not a fault (two
    // silent checks in a rotation's detach would send the modem to the ladder, mid-rotation)
    if (this.callChanging()) return this.scheduleEgressCheck();
    const endpoint = dataPlane.endpoint;
    const reading = await readPublicAddress(egress, endpoint);
    if (this.dataPlane !== dataPlane || this.snapshot().context.wanIp !== wanIp || this.callChanging())
      return this.scheduleEgressCheck();
    const imei = dataPlane.imei;
    const seen = reading.address;
    const host = this.deps.hostEgress;
    // the host's own address is re-learned now and then (rate-limited for the whole farm)
    if (host) await host.learn();
    const leak = seen !== null && host?.isHost(seen) === true;
    this.deps.events.emit('egress', { imei, expected: wanIp, seen, ok: seen !== null && !leak });
    if (seen === null) {
      // proxies still starting are not silent
      if (Date.now() - this.upAt < STARTING_MS) return this.scheduleEgressCheck(1_000);
      if (host && (await host.learn()) === null) {
        this.deps.events.emit('alert', {
          alert: {
            kind: 'echo_unreachable',
            severity: 'critical',
            message: `the echo endpoint does not answer the host either (${echoUrls(egress).join(', ')}): no modem is blamed`,
          },
        });
        return this.scheduleEgressCheck();
      }
      this.silentChecks++;
      const detail = `no answer through the ports of ${imei}`;
      dataPlane.reapplyRouting();
      if (this.silentChecks === 1) {
        this.alert('egress_check_failed', 'warning', `${detail}; routing re-applied, call redialled`);
        this.runtime.send({ type: 'call.lost', detail });
      } else {
        this.alert('egress_check_failed', 'critical', `${detail} after a redial; recovering the modem`);
        this.silentChecks = 0;
        this.runtime.send({ type: 'call.dead', detail: `${detail} after a redial` });
        return;
      }
    } else if (leak) {
      const detail = `port ${endpoint.socksPort} egressed from the host's own address ${seen.slice(0, 64)}, not through modem ${wanIp}`;
      this.alert('egress_mismatch', 'critical', `modem ${imei}: ${detail}`);
      this.runtime.send({ type: 'dataplane.failed', reason: 'egress_mismatch', detail });
      return;
    } else {
      this.silentChecks = 0;
      await this.notePublic(reading, wanIp);
    }
    this.scheduleEgressCheck();
  }
}
/** Journals `imei` as removed (it left its place, or the start-up found it gone). */
export function journalRemoved(
  deps: Pick<ModemDeps, 'events' | 'directory' | 'store'>,
  imei: string,
  from: string,
  event: string,
  usbPath: string | null,
): void {
  deps.events.emit('transition', {
    imei,
    seq: deps.directory.nextSeq(imei),
    from,
    to: 'removed',
    event,
    at: new Date(),
    host: deps.store.hostId,
    detail: { usbPath },
  });
}
