import { join } from 'node:path';
import type { Logger } from '../log.js';
import { DEFAULT_SPOOL_MAX_BYTES, type Policy } from '../policy.js';
import type { Store } from '../store/store.js';
import { AlertQueue } from './alertQueue.js';
import type { FleetEvents } from './events.js';
import { HealthWriter } from './healthWriter.js';
import { JournalRetention } from './journalRetention.js';
import { JournalWriter, type SpooledTransition } from './journalWriter.js';
import { Spool, type FsyncPolicy } from './spool.js';

/** What the fleet's events are recorded by: the journal, health rows, alerts, and journal pruning. */
export interface Recorders {
  journal: JournalWriter;
  health: HealthWriter;
  /** Alerts waiting for the database (retried until stored). */
  alerts: AlertQueue;
  retention: JournalRetention;
}

/**
 * The recorders of one supervisor, subscribed to its events: every transition to the journal
 * (spooled in `<stateDir>/spool` while PostgreSQL is away), every signal sample to health rows,
 * every alert to the database (logged on the way). Started and stopped by the supervisor.
 */
export function recorders(
  events: FleetEvents,
  options: {
    store: Store;
    stateDir: string;
    spool?: { maxBytes?: number; fsync?: FsyncPolicy } | undefined;
    policy: Policy;
    log: Logger;
  },
): Recorders {
  const { store, policy, log } = options;
  const alerts = new AlertQueue((alert) => store.raiseAlert(alert), {
    max: policy.alertsMaxWaiting,
    retryBaseMs: policy.alertRetryBaseMs,
    retryCapMs: policy.alertRetryCapMs,
    log,
  });
  const journal = new JournalWriter({
    sink: store,
    spool: new Spool<SpooledTransition>({
      dir: join(options.stateDir, 'spool'),
      maxBytes: options.spool?.maxBytes ?? DEFAULT_SPOOL_MAX_BYTES,
      fsync: options.spool?.fsync ?? 'always',
    }),
    maxBatch: policy.journalMaxBatch,
    retryBaseMs: policy.journalRetryBaseMs,
    retryCapMs: policy.journalRetryCapMs,
    sendTimeoutMs: policy.journalSendTimeoutMs,
    events,
    log,
  });
  const health = new HealthWriter({
    sink: store,
    log,
    retentionSeconds: policy.healthRetentionSeconds,
    flushIntervalMs: policy.healthFlushMs,
    pruneIntervalMs: policy.healthPruneIntervalMs,
    maxBuffered: policy.healthMaxBuffered,
  });
  const retention = new JournalRetention({
    sink: store,
    log,
    retentionDays: policy.journalRetentionDays,
    intervalMs: policy.journalPruneIntervalMs,
  });
  events.on('transition', (record) => journal.append(record));
  events.on('health', (sample) => health.add(sample));
  events.on('alert', ({ alert, imei }) => {
    log.warn({ alert, imei }, 'alert');
    alerts.push({ ...alert, ...(imei ? { imei } : {}) });
  });
  return { journal, health, alerts, retention };
}
