import type { Sql } from 'postgres';
import type { Logger } from '../log.js';
import { DEFAULT_RANGES } from '../allocationRanges.js';
import { DEFAULT_POLICY } from '../policy.js';
import { allocate, listAllocations } from './allocations.js';
import {
  claimCommands,
  failAbandonedCommands,
  failInterruptedCommands,
  finishCommand,
  getCommand,
  insertCommand,
  rotationWaitMs,
  runningCommands,
  stillRunning,
} from './commands.js';
import {
  deleteSchedule,
  getSchedule,
  recordSkippedRotation,
  scheduleFacts,
  setSchedule,
  type StoredSchedule,
} from './schedules.js';
import {
  heartbeatHost,
  pruneHealth,
  raiseAlert,
  recordHealth,
  registerHost,
  resolveAlert,
  stopHost,
  upsertModem,
  type ModemFacts,
} from './hosts.js';
import { appendTransitions, pruneTransitions, readTransitions } from './journal.js';
import { Listener, type Notification } from './listener.js';
import { lastError, listAlerts, readHealth, recentCommands } from './history.js';
import { listModems, modemGauges, modemOrder, type ModemListing } from './modems.js';
import { readModemHistory } from './modemHistory.js';
import type { HistoryWindow } from './downsample.js';
import { FARM_LEASE, leaseHolder, releaseLease, sweepDeadHosts, type SweepResult } from './liveness.js';
import {
  createRotationLink,
  resolveRotationLink,
  revokeRotationLink,
  rotationLinkInfo,
} from './rotationLinks.js';
import { getCredentials, rotateCredentials, type ProxyCredentials } from './credentials.js';
import {
  addLogin,
  getAccess,
  listLogins,
  removeLogin,
  servedAccess,
  setAllowlist,
  setLimits,
  type AccessView,
  type LoginView,
} from './proxyAccess.js';
import type { ProxyAccess } from '../proxyAccess.js';
import {
  activeTokenIds,
  createToken,
  listTokens,
  resolveToken,
  revokeToken,
  type StoredToken,
  type TokenGrant,
} from './tokens.js';
import { hostModems, modemRecord, setDesired, type ModemRecord } from './reconcile.js';
import {
  addressSeenWithin,
  addressStatsWindows,
  listAddresses,
  recordAddress,
  type AddressSeen,
  type AddressStats,
  type StatsWindow,
} from './addresses.js';
import { ackAlert, clearSilence, listSilences, setSilence, type Silence } from './silences.js';
import {
  claimDeliveries,
  finishDelivery,
  insertTestDelivery,
  listDeliveries,
  nextDeliveryDueMs,
  type DeliveryJob,
} from './deliveries.js';
import {
  createWebhook,
  deleteWebhook,
  listWebhooks,
  syncConfigWebhooks,
  type StoredWebhook,
} from './webhooks.js';
import type { WebhookSpec } from '../alerts/webhookSpec.js';
import type { AlertInput, AllocationRanges, Channel, HealthSample, TransitionRecord } from './types.js';
import { uptimeWindows, type Uptime, type UptimeWindow } from './uptime.js';
import {
  pruneTraffic,
  recordTraffic,
  trafficSeries,
  trafficTotals,
  type TrafficRetention,
  type TrafficSample,
  type TrafficStep,
} from './traffic.js';
import {
  clearExpiry,
  clearQuota,
  getQuota,
  hostQuotas,
  markClosed,
  raiseAlertLevel,
  resetQuota,
  setExpiry,
  setQuota,
  type ClosedReason,
  type StoredQuota,
} from './quotas.js';

export interface StoreOptions {
  sql: Sql;
  /** Connection URL, for the dedicated listen connection. */
  url: string;
  /** The listen connection's URL when it is not `url` (a session past a transaction pooler). */
  listenUrl?: string;
  hostId: string;
  ranges?: AllocationRanges;
  /** The shortest rotation schedule interval accepted (policy `rotationScheduleMinSeconds`). */
  scheduleMinSeconds?: number;
  /** Pending commands per modem before `queue_full` (policy `commandQueueMax`). */
  commandQueueMax?: number;
  log?: Logger;
}

/** The typed store API of one host: the only way the rest of modemfleet talks to PostgreSQL. */
export class Store {
  readonly sql: Sql;

  /** The ranges this host's allocations come from. */
  get ranges(): AllocationRanges {
    return this.options.ranges ?? DEFAULT_RANGES;
  }
  readonly hostId: string;
  private readonly options: StoreOptions;

  constructor(options: StoreOptions) {
    this.options = options;
    this.sql = options.sql;
    this.hostId = options.hostId;
  }

  registerHost(options?: {
    name?: string;
    proxyHost?: string;
    proxyBackend?: '3proxy' | 'microsocks+tinyproxy';
  }): Promise<void> {
    return registerHost(this.sql, this.hostId, options);
  }
  heartbeat(): Promise<void> {
    return heartbeatHost(this.sql, this.hostId);
  }
  stopHost(): Promise<void> {
    return stopHost(this.sql, this.hostId);
  }
  upsertModem(facts: ModemFacts): ReturnType<typeof upsertModem> {
    return upsertModem(this.sql, { hostId: this.hostId, ...facts });
  }

  modems(options?: ModemListing): ReturnType<typeof listModems> {
    return listModems(this.sql, options);
  }
  /** The farm's liveness sweep, under the `farm` lease in this host's name (src/store/liveness.ts). */
  sweepDeadHosts(options: { deadAfterMs: number; leaseMs: number }): Promise<SweepResult> {
    return sweepDeadHosts(this.sql, this.hostId, options);
  }
  releaseFarmLease(): Promise<void> {
    return releaseLease(this.sql, FARM_LEASE, this.hostId);
  }
  farmLeaseHolder(): Promise<string | undefined> {
    return leaseHolder(this.sql, FARM_LEASE);
  }
  /** Every modem's IMEI in listing order (host, slot). */
  modemOrder(): Promise<string[]> {
    return modemOrder(this.sql);
  }

  modemGauges(): ReturnType<typeof modemGauges> {
    return modemGauges(this.sql);
  }
  health(imei: string, options?: { since?: Date; limit?: number }): ReturnType<typeof readHealth> {
    return readHealth(this.sql, imei, options);
  }
  /** Signal and state strip of one modem over a window, downsampled for a chart. */
  modemHistory(imei: string, window: HistoryWindow): ReturnType<typeof readModemHistory> {
    return readModemHistory(this.sql, imei, window);
  }
  alerts(options?: Parameters<typeof listAlerts>[1]): ReturnType<typeof listAlerts> {
    return listAlerts(this.sql, options);
  }
  recentCommands(imei: string, limit?: number): ReturnType<typeof recentCommands> {
    return recentCommands(this.sql, imei, limit);
  }
  lastError(imei: string): ReturnType<typeof lastError> {
    return lastError(this.sql, imei);
  }

  /** A new rotation link secret for the modem (its previous link stops working). */
  createRotationLink(imei: string, createdBy: string): Promise<string> {
    return createRotationLink(this.sql, imei, createdBy);
  }
  revokeRotationLink(imei: string): Promise<boolean> {
    return revokeRotationLink(this.sql, imei);
  }
  resolveRotationLink(secret: string): Promise<string | null> {
    return resolveRotationLink(this.sql, secret);
  }
  rotationLinkInfo(imei: string): ReturnType<typeof rotationLinkInfo> {
    return rotationLinkInfo(this.sql, imei);
  }

  /** A modem's proxy login on its host (`unknown_modem`, `no_credentials`). */
  credentials(imei: string): Promise<ProxyCredentials> {
    return getCredentials(this.sql, imei);
  }
  /** A new proxy password, stored, and a `credentials` command for the modem's host to apply it. */
  rotateCredentials(imei: string, requestedBy: string): ReturnType<typeof rotateCredentials> {
    return rotateCredentials(this.sql, imei, requestedBy);
  }

  /** A modem's logins besides its own, allowlist and speed limits (src/store/proxyAccess.ts). */
  logins(imei: string): Promise<LoginView[]> {
    return listLogins(this.sql, imei);
  }
  addLogin(imei: string, request: unknown, requestedBy: string): ReturnType<typeof addLogin> {
    return addLogin(this.sql, imei, request, requestedBy);
  }
  removeLogin(imei: string, username: string, requestedBy: string): Promise<{ commandId: number }> {
    return removeLogin(this.sql, imei, username, requestedBy);
  }
  access(imei: string): Promise<AccessView> {
    return getAccess(this.sql, imei);
  }
  setAllowlist(imei: string, allowlist: unknown, requestedBy: string): ReturnType<typeof setAllowlist> {
    return setAllowlist(this.sql, imei, allowlist, requestedBy);
  }
  setLimits(imei: string, limits: unknown, requestedBy: string): ReturnType<typeof setLimits> {
    return setLimits(this.sql, imei, limits, requestedBy);
  }
  /** What this host's data plane serves for the modem (expired logins left out). */
  servedAccess(imei: string): Promise<ProxyAccess> {
    return servedAccess(this.sql, imei);
  }

  /** Scoped API tokens (src/store/tokens.ts): the token itself is returned only here. */
  createToken(input: Parameters<typeof createToken>[1]): Promise<{ token: string; stored: StoredToken }> {
    return createToken(this.sql, input);
  }
  tokens(): Promise<StoredToken[]> {
    return listTokens(this.sql);
  }
  revokeToken(name: string): Promise<StoredToken> {
    return revokeToken(this.sql, name);
  }
  resolveToken(token: string): Promise<TokenGrant | null> {
    return resolveToken(this.sql, token);
  }
  activeTokenIds(ids: readonly number[]): Promise<Set<number>> {
    return activeTokenIds(this.sql, ids);
  }

  /** Every modem of this host, for reconciliation. */
  hostModems(): Promise<ModemRecord[]> {
    return hostModems(this.sql, this.hostId);
  }
  modemRecord(imei: string): Promise<ModemRecord | null> {
    return modemRecord(this.sql, imei);
  }
  /** The public address seen through a modem's port (with its private one): history and modem row. */
  recordAddress(imei: string, publicIp: string, privateIp: string): Promise<{ previous: string | null }> {
    return recordAddress(this.sql, imei, publicIp, privateIp);
  }

  addresses(imei: string, options: { before?: Date; limit?: number } = {}): Promise<AddressSeen[]> {
    return listAddresses(this.sql, imei, options);
  }

  /** Rotations, distinct public addresses and /24s, reuse rate over 24 h and 7 d (null: the farm). */
  /** Uptime over 24 h, 7 d and 30 d from the journal, of one modem or the farm (null). */
  uptime(imei: string | null): Promise<Record<UptimeWindow, Uptime>> {
    return uptimeWindows(this.sql, imei);
  }
  /** `publicIp` seen within `hours` on the modem (null: anywhere on the farm). */
  addressSeenWithin(imei: string | null, publicIp: string, hours: number): Promise<boolean> {
    return addressSeenWithin(this.sql, imei, publicIp, hours);
  }
  addressStats(imei: string | null): Promise<Record<StatsWindow, AddressStats>> {
    return addressStatsWindows(this.sql, imei);
  }

  setDesired(imei: string, desired: 'enabled' | 'disabled'): Promise<void> {
    return setDesired(this.sql, imei, desired);
  }

  allocate(imei: string): ReturnType<typeof allocate> {
    return allocate(this.sql, this.hostId, imei, this.options.ranges ?? DEFAULT_RANGES);
  }
  allocations(): ReturnType<typeof listAllocations> {
    return listAllocations(this.sql, this.hostId);
  }

  appendTransitions(batch: readonly TransitionRecord[]): ReturnType<typeof appendTransitions> {
    return appendTransitions(this.sql, batch);
  }
  /** Retention: up to about `maxRows` journal rows older than `seconds` deleted; how many. */
  pruneTransitionsOlderThan(seconds: number, maxRows = 5_000): Promise<number> {
    return pruneTransitions(this.sql, seconds, maxRows);
  }
  transitions(
    imei: string,
    options?: { before?: number; limit?: number },
  ): ReturnType<typeof readTransitions> {
    return readTransitions(this.sql, imei, options);
  }

  insertCommand(imei: string, kind: string, requestedBy: string): Promise<number> {
    return insertCommand(this.sql, imei, kind, requestedBy, this.options.commandQueueMax);
  }
  /** Pending commands of this host's modems; a rotate waits `rotationMinIntervalMs` after the last. */
  claimCommands(limit?: number, rotationMinIntervalMs?: number): ReturnType<typeof claimCommands> {
    return claimCommands(this.sql, this.hostId, limit, rotationMinIntervalMs);
  }
  rotationWaitMs(rotationMinIntervalMs: number): Promise<number | undefined> {
    return rotationWaitMs(this.sql, this.hostId, rotationMinIntervalMs);
  }
  runningCommands(): ReturnType<typeof runningCommands> {
    return runningCommands(this.sql, this.hostId);
  }
  finishCommand(id: number, ok: boolean, result?: Record<string, unknown>): Promise<boolean> {
    return finishCommand(this.sql, id, ok, result);
  }
  stillRunning(id: number): Promise<boolean> {
    return stillRunning(this.sql, this.hostId, id);
  }
  failAbandonedCommands(staleSeconds?: number): Promise<number[]> {
    return failAbandonedCommands(this.sql, this.hostId, staleSeconds);
  }
  failInterruptedCommands(): Promise<number[]> {
    return failInterruptedCommands(this.sql, this.hostId);
  }
  command(id: number): ReturnType<typeof getCommand> {
    return getCommand(this.sql, id);
  }

  /** A modem's own rotation schedule, validated (`invalid_schedule`, `unknown_modem`). */
  setSchedule(imei: string, schedule: unknown, updatedBy: string): Promise<StoredSchedule> {
    return setSchedule(
      this.sql,
      imei,
      schedule,
      updatedBy,
      this.options.scheduleMinSeconds ?? DEFAULT_POLICY.rotationScheduleMinSeconds,
    );
  }
  deleteSchedule(imei: string): Promise<boolean> {
    return deleteSchedule(this.sql, imei);
  }
  schedule(imei: string): Promise<StoredSchedule | null> {
    return getSchedule(this.sql, imei);
  }
  /** This host's scheduled modems (every one of them when a farm default applies). */
  scheduleFacts(everyModem: boolean): ReturnType<typeof scheduleFacts> {
    return scheduleFacts(this.sql, this.hostId, everyModem);
  }
  recordSkippedRotation(imei: string, state: string): Promise<number> {
    return recordSkippedRotation(this.sql, imei, state);
  }

  recordHealth(samples: readonly HealthSample[]): Promise<void> {
    return recordHealth(this.sql, samples);
  }
  pruneHealthOlderThan(seconds: number): Promise<number> {
    return pruneHealth(this.sql, seconds);
  }
  raiseAlert(alert: Omit<AlertInput, 'hostId'>): Promise<number> {
    return raiseAlert(this.sql, { hostId: this.hostId, ...alert });
  }
  resolveAlert(id: number): Promise<void> {
    return resolveAlert(this.sql, id);
  }

  ackAlert(id: number, by: string): ReturnType<typeof ackAlert> {
    return ackAlert(this.sql, id, by);
  }
  setSilence(imei: string, until: Date, setBy: string): Promise<Silence> {
    return setSilence(this.sql, imei, until, setBy);
  }
  clearSilence(imei: string): Promise<boolean> {
    return clearSilence(this.sql, imei);
  }
  silences(): Promise<Silence[]> {
    return listSilences(this.sql);
  }

  createWebhook(spec: WebhookSpec, createdBy: string): Promise<StoredWebhook> {
    return createWebhook(this.sql, spec, createdBy);
  }
  webhooks(id?: number): Promise<StoredWebhook[]> {
    return listWebhooks(this.sql, id);
  }
  deleteWebhook(id: number): Promise<void> {
    return deleteWebhook(this.sql, id);
  }
  syncConfigWebhooks(specs: readonly WebhookSpec[]): Promise<void> {
    return syncConfigWebhooks(this.sql, specs);
  }
  /** Due deliveries of any host's alerts, claimed by this host (once across the farm). */
  claimDeliveries(limit: number, staleSeconds: number): Promise<DeliveryJob[]> {
    return claimDeliveries(this.sql, this.hostId, limit, staleSeconds);
  }
  finishDelivery(id: number, outcome: Parameters<typeof finishDelivery>[3]): Promise<boolean> {
    return finishDelivery(this.sql, this.hostId, id, outcome);
  }
  nextDeliveryDueMs(): Promise<number | undefined> {
    return nextDeliveryDueMs(this.sql);
  }
  insertTestDelivery(webhookId: number): Promise<DeliveryJob> {
    return insertTestDelivery(this.sql, this.hostId, webhookId);
  }
  deliveries(webhookId: number, limit = 50): ReturnType<typeof listDeliveries> {
    return listDeliveries(this.sql, webhookId, limit);
  }

  /** Traffic samples of this host's kernel counters (src/store/traffic.ts); idempotent. */
  recordTraffic(samples: readonly TrafficSample[]): Promise<number> {
    return recordTraffic(this.sql, samples);
  }
  trafficSeries(
    imei: string,
    range: { from: Date; to: Date; step: TrafficStep },
  ): ReturnType<typeof trafficSeries> {
    return trafficSeries(this.sql, imei, range);
  }
  trafficTotals(now?: Date): ReturnType<typeof trafficTotals> {
    return trafficTotals(this.sql, now);
  }
  pruneTraffic(retention: TrafficRetention, maxRows?: number): Promise<number> {
    return pruneTraffic(this.sql, retention, maxRows);
  }

  /** Quotas and expiry (src/store/quotas.ts): `invalid_quota`, `invalid_expiry`, `unknown_modem`, `no_quota`. */
  quota(imei: string): Promise<StoredQuota | null> {
    return getQuota(this.sql, imei);
  }
  setQuota(imei: string, input: unknown, updatedBy: string): Promise<StoredQuota> {
    return setQuota(this.sql, imei, input, updatedBy);
  }
  clearQuota(imei: string, updatedBy: string): Promise<boolean> {
    return clearQuota(this.sql, imei, updatedBy);
  }
  resetQuota(imei: string, updatedBy: string): Promise<StoredQuota> {
    return resetQuota(this.sql, imei, updatedBy);
  }
  setExpiry(imei: string, at: Date, updatedBy: string): Promise<StoredQuota> {
    return setExpiry(this.sql, imei, at, updatedBy);
  }
  clearExpiry(imei: string, updatedBy: string): Promise<boolean> {
    return clearExpiry(this.sql, imei, updatedBy);
  }
  /** This host's modems' quotas with its traffic cursors (the enforcer's view). */
  hostQuotas(): ReturnType<typeof hostQuotas> {
    return hostQuotas(this.sql, this.hostId);
  }
  markClosed(imei: string, reason: ClosedReason | null): Promise<boolean> {
    return markClosed(this.sql, imei, reason);
  }
  raiseAlertLevel(imei: string, level: 80 | 100, periodStart: Date): Promise<boolean> {
    return raiseAlertLevel(this.sql, imei, level, periodStart);
  }

  /** A started listener on `channels`; `onCatchUp` runs after every (re)LISTEN. */
  async listen(
    channels: readonly Channel[],
    onNotification: (n: Notification) => void,
    options: {
      onCatchUp?: () => Promise<void>;
      heartbeatIntervalMs?: number;
      heartbeatTimeoutMs?: number;
      catchUpTimeoutMs?: number;
    } = {},
  ): Promise<Listener> {
    const listener = new Listener({
      url: this.options.listenUrl ?? this.options.url,
      channels,
      onNotification,
      pingSql: this.sql,
      ...options,
      ...(this.options.log ? { log: this.options.log } : {}),
    });
    await listener.start();
    return listener;
  }
}
