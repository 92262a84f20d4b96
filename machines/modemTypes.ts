/** Context, events and reasons of the modem machine. Pure types: no I/O. */

export const REASONS = [
  'sim_missing',
  'sim_locked',
  'registration_denied',
  'no_service',
  'at_timeout',
  'port_lost',
  'data_call_failed',
  'rotation_failed',
  'restart_intensity',
  'unexpected_answer',
  'hardware_fault',
  'proxy_failed',
  'egress_mismatch',
  'no_free_port',
  /** `AT+QCFG="usbnet"` is not 0 (QMI/RmNet): the host's net interface is not a qmi_wwan link. */
  'usbnet_mode',
  /** The qmi_wwan link cannot be put in raw-IP mode (the EC25 sends raw IP): it would carry nothing. */
  'raw_ip_off',
  /** The host's data call (`AT$QCRMCALL`) does not come up, or carries nothing after a redial. */
  'no_data_call',
  /**
   * The modem reported an address no carrier gives (loopback, multicast, the host's own, another
   * modem's, ...): refused before it reaches `ip rule` (src/net/addressGuard.ts).
   */
  'hostile_address',
] as const;
export type Reason = (typeof REASONS)[number];

/** Reasons no recovery rung can fix (configuration, kernel or hardware): straight to `error`. */
export const FATAL_REASONS: ReadonlySet<Reason> = new Set<Reason>(['usbnet_mode', 'raw_ip_off']);

/** Registration for data (EPS or PS, whichever is registered): see src/ec25/parsers.ts. */
export type RegistrationStat =
  'idle' | 'home' | 'searching' | 'denied' | 'unknown' | 'roaming' | 'sms_only' | 'emergency';
/** `busy` (CME 14), `failure` (CME 13) and `not_ready` are often transient: retried before giving up. */
export type SimState = 'ready' | 'pin' | 'puk' | 'not_ready' | 'busy' | 'failure' | 'missing';
export type CommandKind = 'rotate' | 'reset' | 'disable' | 'enable';

export interface ModemIdentity {
  imei: string;
  manufacturer: string;
  model: string;
  firmware: string;
  iccid: string | null;
  imsi: string | null;
  /** `AT+QCFG="usbnet"`: 0 QMI/RmNet; anything else cannot carry our data path (`usbnet_mode`). */
  usbnet?: number | null;
}

export interface SignalSample {
  technology: string | null;
  rssi: number | null;
  rsrp: number | null;
  /** As reported (`+QCSQ` LTE: raw 0-250). */
  sinr: number | null;
  /** SINR in dB (raw/5 − 20). */
  sinrDb: number | null;
  rsrq: number | null;
}

/** Limits and timings of one modem; defaults in DEFAULT_MODEM_CONFIG. */
export interface ModemConfig {
  /** `AT` probes (each with the transport's short timeout) before detection gives up. */
  probeAttempts: number;
  probeRetryMs: number;
  /**
   * A SIM not ready, busy (CME 14) or failing (CME 13) is retried this often, `simRetryMs` doubling
   * each time (capped by backoffCapMs), with one radio off/on halfway, before recovering.
   */
  simRetries: number;
  simRetryMs: number;
  /** Registration is polled at this interval, for at most `registrationTimeoutMs`. */
  registrationPollMs: number;
  registrationTimeoutMs: number;
  signalPollMs: number;
  /** Rotation: time kept detached (some carriers need 5 s+), address attempts. */
  detachMs: number;
  rotationAttempts: number;
  /** Recovery ladder backoff: base * 2^attempt, capped. */
  backoffBaseMs: number;
  backoffCapMs: number;
  /** After AT+CFUN=1,1: wait this long for re-enumeration and RDY. */
  reenumerationMs: number;
  /** Restart intensity: at most `maxRecoveries` recoveries within `recoveryWindowMs`. */
  maxRecoveries: number;
  recoveryWindowMs: number;
  /**
   * Whether the USB-level reset rung runs (sysfs `authorized` 0→1: the device re-enumerates
   * without losing power); needs the device's sysfs path and root.
   */
  usbReset: boolean;
  /** Whether a USB power-cycle command is configured (the last rung of the ladder). */
  powerCycle: boolean;
}

export const DEFAULT_MODEM_CONFIG: ModemConfig = {
  probeAttempts: 20,
  probeRetryMs: 500,
  simRetries: 5,
  simRetryMs: 2_000,
  registrationPollMs: 2_000,
  registrationTimeoutMs: 180_000,
  signalPollMs: 30_000,
  detachMs: 5_000,
  rotationAttempts: 3,
  backoffBaseMs: 1_000,
  backoffCapMs: 60_000,
  reenumerationMs: 30_000,
  maxRecoveries: 5,
  recoveryWindowMs: 600_000,
  usbReset: false,
  powerCycle: false,
};

/** Rungs of the recovery ladder, in order. */
export const LADDER = ['reinit', 'softReset', 'hardReset', 'usbReset', 'powerCycle'] as const;
export type Rung = (typeof LADDER)[number];

export interface PendingCommand {
  id: number;
  kind: CommandKind;
}

export interface ModemContext {
  usbPath: string;
  config: ModemConfig;
  /** Clock for restart intensity (the SimulatedClock in tests). */
  now: () => number;
  identity: ModemIdentity | null;
  operator: string | null;
  registration: RegistrationStat | null;
  wanIp: string | null;
  signal: SignalSample | null;
  reason: Reason | null;
  /** Detail of the last failure, for operators (bounded text). */
  lastError: string | null;
  probeAttempt: number;
  simAttempt: number;
  registrationSince: number;
  /** Index into LADDER of the next recovery rung (rungs not configured are skipped). */
  rung: number;
  /** Times of recent recoveries (restart intensity). */
  recoveries: number[];
  /** The rotation in progress. */
  rotation: { command: PendingCommand; attempt: number; previousIp: string | null } | null;
  /** What the operator wants (a disabled modem is disabled again after every start). */
  desired: 'enabled' | 'disabled';
  /** The reset/disable/enable command being carried out. */
  command: PendingCommand | null;
}

export interface ModemInput {
  usbPath: string;
  desired?: 'enabled' | 'disabled';
  config?: Partial<ModemConfig>;
  now?: () => number;
}

export type ModemEvent =
  | { type: 'device.removed' }
  /** The device came back on the same USB path (re-enumeration after a reset). */
  | { type: 'device.added' }
  /**
   * The host's data call went down while AT still answers: `+CGEV` (PDN deactivated, detach), the
   * periodic check, or no answer through the ports: redial.
   */
  | { type: 'call.lost'; detail: string }
  /** Still no traffic after a redial: the recovery ladder. */
  | { type: 'call.dead'; detail: string }
  /** The transport gave up on the port (N consecutive timeouts, write errors). */
  | { type: 'port.lost'; detail?: string }
  /** `RDY`: the modem (re)booted. */
  | { type: 'urc.rdy' }
  | { type: 'urc.registration'; stat: RegistrationStat }
  /** The modem's data plane failed for good: its proxy crash-looped, or a port egressed wrongly. */
  | {
      type: 'dataplane.failed';
      reason: 'proxy_failed' | 'egress_mismatch' | 'no_free_port' | 'hostile_address';
      detail: string;
    }
  | { type: 'command.rotate'; id: number }
  | { type: 'command.reset'; id: number }
  | { type: 'command.disable'; id: number }
  | { type: 'command.enable'; id: number };

export interface CommandResult {
  id: number;
  kind: CommandKind;
  ok: boolean;
  result: Record<string, unknown>;
}

export interface AlertInfo {
  kind: string;
  severity: 'info' | 'warning' | 'critical';
  message: string;
}
