/** Shapes stored in and read from PostgreSQL. Kept in step with sql/ migrations. */

export const MODEM_STATES = [
  'detecting',
  'initializing',
  'online',
  'disabling',
  'disabled',
  'enabling',
  'resetting',
  'recovering',
  'error',
  'removed',
] as const;
export type ModemState = (typeof MODEM_STATES)[number];

/** The commands an operator queues by kind (API `commands`, CLI `rotate|reset|disable|enable`). */
export const COMMAND_KINDS = ['rotate', 'reset', 'disable', 'enable'] as const;
/**
 * Every kind stored in `modem_commands`: `credentials` is queued only with a new password (store
 * `rotateCredentials`): its host re-applies the modem's proxy login.
 */
export const STORED_COMMAND_KINDS = [...COMMAND_KINDS, 'credentials'] as const;
export type CommandKind = (typeof STORED_COMMAND_KINDS)[number];

export const COMMAND_STATUSES = ['pending', 'running', 'done', 'failed'] as const;
export type CommandStatus = (typeof COMMAND_STATUSES)[number];

export const CHANNELS = [
  'modem_status_change',
  'modem_health',
  'modem_config_change',
  'modem_alerts',
  'system_events',
  'modem_commands',
  'api_tokens',
] as const;
export type Channel = (typeof CHANNELS)[number];

export { HOST_ID_PATTERN, IMEI_PATTERN } from '../ids.js';

export const isCommandKind = (value: unknown): value is (typeof COMMAND_KINDS)[number] =>
  typeof value === 'string' && (COMMAND_KINDS as readonly string[]).includes(value);

/** One journal row: a transition of one modem actor. `to` is a state path like `online.rotating`. */
export interface TransitionRecord {
  imei: string;
  seq: number;
  from: string | null;
  to: string;
  event: string;
  at: Date;
  host?: string | undefined;
  detail?: Record<string, unknown> | undefined;
  /** Reason of an `error` state. */
  reason?: string | undefined;
  /** The modem's WAN address while online. */
  wanIp?: string | undefined;
}

export interface AppendResult {
  imei: string;
  stored: number;
  lastSeq: number;
  /** Set when the batch skipped a sequence number for this modem: the seq expected next. */
  gapAt: number | null;
}

export interface Allocation {
  hostId: string;
  imei: string;
  slot: number;
  httpPort: number;
  socksPort: number;
  routingTable: number;
  ifaceId: number;
  proxyUser: string;
  proxyPassword: string;
}

export type { AllocationRanges, Range } from '../allocationRanges.js';

export interface Command {
  id: number;
  imei: string;
  kind: CommandKind;
  requestedBy: string;
  requestedAt: Date;
  status: CommandStatus;
}

export interface HealthSample {
  imei: string;
  at?: Date;
  rssi?: number | null;
  rsrp?: number | null;
  rsrq?: number | null;
  sinr?: number | null;
  operator?: string | null;
  technology?: string | null;
}

export type AlertSeverity = 'info' | 'warning' | 'critical';

export interface AlertInput {
  hostId?: string | undefined;
  imei?: string | undefined;
  kind: string;
  severity: AlertSeverity;
  message: string;
  detail?: Record<string, unknown>;
  /** When it happened (default: now); an alert stored late keeps its own time. */
  raisedAt?: Date | undefined;
}
