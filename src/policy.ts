/**
 * Limits and timeouts, in one named object: the defaults every component falls back to, and the
 * `policy` key of the configuration file (each a positive integer; see README, Configuration).
 * Per-modem machine timings are `modem` (ModemConfig), allocation ranges `allocation`.
 */
export interface Policy {
  /** Connection attempts (with backoff) before start-up fails with `database_unreachable`. */
  databaseConnectAttempts: number;
  /** Listen-connection heartbeat: send interval and the silence after which it is rebuilt. */
  listenHeartbeatIntervalMs: number;
  listenHeartbeatTimeoutMs: number;
  /** How long health samples are kept, and how often older ones are pruned. */
  healthRetentionSeconds: number;
  healthPruneIntervalMs: number;
  /** Health samples are written together this often; at most this many wait for the database. */
  healthFlushMs: number;
  healthMaxBuffered: number;
  /**
   * The host's heartbeat row, written this often; the farm's liveness sweep (one host, under the
   * `farm` lease) runs as often.
   */
  hostHeartbeatMs: number;
  /**
   * A host whose heartbeat is older than this is dead: its modems are shown `stale` and their
   * commands fail with `host_unavailable` (within this plus one sweep: 70 s by default).
   */
  hostDeadAfterMs: number;
  /** A command not answered by its modem within this fails with `timeout`. */
  commandTimeoutMs: number;
  /** Safety net: commands are caught up this often whatever NOTIFY did. */
  commandPollMs: number;
  /** A rotation must show its new address through the modem's own port within this. */
  rotationVerifyMs: number;
  /** Retries of a modem's database record while identifying it: backoff from/to. */
  retryBaseMs: number;
  retryCapMs: number;
  /** Transitions held per modem while its IMEI is unknown (more are logged, not journaled). */
  maxUnidentifiedTransitions: number;
  /** Journal rows per round trip; replay backoff while PostgreSQL is away. */
  journalMaxBatch: number;
  journalRetryBaseMs: number;
  journalRetryCapMs: number;
  /**
   * A journal round trip that has not answered in this long counts as failed: its rows go to the
   * spool (a server that hangs instead of refusing would otherwise stall the journal in memory).
   */
  journalSendTimeoutMs: number;
  /** Journal retention: rows older than this many days are pruned, checked this often. */
  journalRetentionDays: number;
  journalPruneIntervalMs: number;
  /** Alerts waiting for the database (the oldest are dropped beyond it); retry backoff. */
  alertsMaxWaiting: number;
  alertRetryBaseMs: number;
  alertRetryCapMs: number;
  /** One modem actor restarted at most this many times in this window (one_for_one). */
  modemMaxRestarts: number;
  modemRestartWindowMs: number;
  /** How often the AT tty is checked for presence (removal, re-enumeration). */
  presencePollMs: number;
  /** Consecutive AT timeouts after which the port counts as lost (ModemManager: 10). */
  maxConsecutiveTimeouts: number;
  /** The data call's address is polled this many times, this far apart. */
  addressPolls: number;
  addressPollMs: number;
  /** The USB power-cycle command is killed after this. */
  powerCycleTimeoutMs: number;
  /**
   * A rotate (operator, link, schedule alike) is not claimed before this long after the modem's
   * last rotation finished: it waits in the queue until it is allowed.
   */
  rotationMinIntervalMs: number;
  /** The shortest rotation schedule interval accepted (API, CLI, config); lowered only by tests. */
  rotationScheduleMinSeconds: number;
  /** The rotation scheduler re-reads the schedules this often (a change takes effect within it). */
  rotationSchedulePollMs: number;
  /** Pending commands per modem; past it a new one is refused (`queue_full`, HTTP 429). */
  commandQueueMax: number;
  /** Operator commands (bearer token) per modem: a burst, then one per interval (429 above). */
  commandBurst: number;
  commandRefillMs: number;
  /**
   * Rotation-link requests per link (one per modem): a budget apart from the operator's, taken
   * before any query (a looping link cannot spend the operator's budget, nor the database's time).
   */
  linkBurst: number;
  linkRefillMs: number;
  /** Unauthenticated requests (/health, /live, /ready, /metrics, /rotate/*) per client address. */
  publicBurst: number;
  publicRefillMs: number;
  /** HTTP: whole request (headers and body) within this, else 408 and closed. */
  httpRequestTimeoutMs: number;
  /** HTTP: the request's headers within this. */
  httpHeadersTimeoutMs: number;
  /** HTTP: an idle keep-alive connection is closed after this. */
  httpKeepAliveTimeoutMs: number;
  /** HTTP: a connection without a byte in or out for this long is closed. */
  httpIdleTimeoutMs: number;
  /** HTTP: open connections at once, WebSocket clients included (more are closed at once). */
  httpMaxConnections: number;
  /** `/metrics` is rendered at most once per this (scrapes in between get the same text). */
  metricsCacheMs: number;
  /** WebSocket clients at once, and from one client address (503 above either). */
  wsMaxClients: number;
  wsMaxClientsPerAddress: number;
  /**
   * Connections of this process's pool (the daemon's and the demo's); each process also holds one
   * LISTEN connection per listener (commands, inspector, webhooks): see README, "Many hosts".
   */
  databasePoolMax: number;
  /** Push alerts: one request's timeout; backoff between attempts; attempts before a delivery fails. */
  webhookTimeoutMs: number;
  webhookRetryBaseMs: number;
  webhookRetryCapMs: number;
  webhookMaxAttempts: number;
  /** Safety net: due webhook deliveries are looked for this often whatever NOTIFY did. */
  webhookPollMs: number;
  /**
   * A proxy the previous run handed over is adopted when its modem comes online within this after
   * start (same address, same settings); one not adopted by then is killed.
   */
  handoverAdoptMs: number;
  /** An adopted proxy (not our child: no exit event) is checked for life this often. */
  adoptedProxyPollMs: number;
  /**
   * Traffic accounting: the kernel counters are read this often (quota calibration, metrics), and
   * a sample of each modem whose counters moved is stored this often (rows are per minute); quotas
   * are re-read at least this often whatever NOTIFY did; per-minute, per-hour and per-day rows are
   * kept this many days, pruned this often.
   */
  trafficReadMs: number;
  trafficSampleMs: number;
  trafficQuotaPollMs: number;
  trafficMinuteRetentionDays: number;
  trafficHourRetentionDays: number;
  trafficDayRetentionDays: number;
  trafficPruneIntervalMs: number;
}

export const DEFAULT_POLICY: Policy = {
  databaseConnectAttempts: 6,
  listenHeartbeatIntervalMs: 2_000,
  listenHeartbeatTimeoutMs: 10_000,
  healthRetentionSeconds: 14 * 86_400,
  healthPruneIntervalMs: 3_600_000,
  healthFlushMs: 1_000,
  healthMaxBuffered: 100_000,
  hostHeartbeatMs: 10_000,
  hostDeadAfterMs: 60_000,
  commandTimeoutMs: 600_000,
  commandPollMs: 30_000,
  rotationVerifyMs: 15_000,
  retryBaseMs: 200,
  retryCapMs: 5_000,
  maxUnidentifiedTransitions: 200,
  journalMaxBatch: 1_000,
  journalRetryBaseMs: 250,
  journalRetryCapMs: 5_000,
  journalSendTimeoutMs: 10_000,
  journalRetentionDays: 90,
  journalPruneIntervalMs: 3_600_000,
  alertsMaxWaiting: 500,
  alertRetryBaseMs: 250,
  alertRetryCapMs: 5_000,
  modemMaxRestarts: 5,
  modemRestartWindowMs: 600_000,
  presencePollMs: 500,
  maxConsecutiveTimeouts: 10,
  addressPolls: 10,
  addressPollMs: 300,
  powerCycleTimeoutMs: 30_000,
  rotationMinIntervalMs: 30_000,
  rotationScheduleMinSeconds: 60,
  rotationSchedulePollMs: 5_000,
  commandQueueMax: 8,
  commandBurst: 5,
  commandRefillMs: 2_000,
  linkBurst: 3,
  linkRefillMs: 10_000,
  publicBurst: 60,
  publicRefillMs: 100,
  httpRequestTimeoutMs: 10_000,
  httpHeadersTimeoutMs: 5_000,
  httpKeepAliveTimeoutMs: 5_000,
  httpIdleTimeoutMs: 30_000,
  httpMaxConnections: 512,
  metricsCacheMs: 1_500,
  wsMaxClients: 100,
  wsMaxClientsPerAddress: 20,
  databasePoolMax: 8,
  webhookTimeoutMs: 10_000,
  webhookRetryBaseMs: 2_000,
  webhookRetryCapMs: 300_000,
  webhookMaxAttempts: 10,
  webhookPollMs: 10_000,
  handoverAdoptMs: 60_000,
  adoptedProxyPollMs: 1_000,
  trafficReadMs: 10_000,
  trafficSampleMs: 60_000,
  trafficQuotaPollMs: 30_000,
  trafficMinuteRetentionDays: 7,
  trafficHourRetentionDays: 93,
  trafficDayRetentionDays: 1_830,
  trafficPruneIntervalMs: 3_600_000,
};

/** The journal spool's size bound (config `spoolMaxBytes`). */
export const DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024;

/** What a `Modem` reads of the policy. */
export type FleetPolicy = Pick<
  Policy,
  'commandTimeoutMs' | 'rotationVerifyMs' | 'retryBaseMs' | 'retryCapMs' | 'maxUnidentifiedTransitions'
>;
