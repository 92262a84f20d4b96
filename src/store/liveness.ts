import type { Sql } from 'postgres';

/** The lease of the farm-wide sweep: marking dead hosts stale and failing their modems' commands. */
export const FARM_LEASE = 'farm';

/** A host found dead by a sweep (its heartbeat older than the limit). */
export interface DeadHost {
  host: string;
  heartbeatAt: Date;
}

export interface SweepResult {
  /** This host holds the lease (and so did the sweep); false: another host does. */
  held: boolean;
  /** Hosts marked stale by this sweep (not the ones marked before). */
  marked: DeadHost[];
  /** Commands of stale hosts' modems failed with `host_unavailable` by this sweep. */
  failed: { id: number; imei: string; host: string }[];
}

const secs = (ms: number): number => ms / 1000;

/**
 * One sweep of the farm's liveness, in one transaction under the `farm` lease (taken if it is free
 * or expired, renewed if `holder` has it; the row stays locked until the commit, so two sweeps never
 * overlap even across a lease changing hands): hosts whose heartbeat is older than `deadAfterMs`
 * are marked stale (`stale_at`, which NOTIFYs), and every pending or running command of a stale
 * host's modems fails with `host_unavailable`. Without the lease nothing is done.
 */
export async function sweepDeadHosts(
  sql: Sql,
  holder: string,
  options: { deadAfterMs: number; leaseMs: number },
): Promise<SweepResult> {
  return sql.begin(async (tx) => {
    const lease = await tx`
      insert into leases (name, holder, expires_at)
      values (${FARM_LEASE}, ${holder}, now() + make_interval(secs => ${secs(options.leaseMs)}))
      on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at,
        acquired_at = case when leases.holder = excluded.holder then leases.acquired_at else now() end
      where leases.holder = excluded.holder or leases.expires_at < now()
      returning holder`;
    if (lease.length === 0) return { held: false, marked: [], failed: [] };
    const marked = await tx<{ id: string; heartbeat_at: Date }[]>`
      update hosts set stale_at = now()
      where stale_at is null and heartbeat_at < now() - make_interval(secs => ${secs(options.deadAfterMs)})
      returning id, heartbeat_at`;
    const failed = await tx<{ id: string; imei: string; host: string }[]>`
      update modem_commands c set status = 'failed', finished_at = now(),
        result = jsonb_build_object('error', 'host_unavailable', 'message',
          'host ' || h.id || ' of this modem is not running (last heartbeat '
            || to_char(h.heartbeat_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ')',
          'host', h.id)
      from modems m join hosts h on h.id = m.host_id
      where m.imei = c.imei and h.stale_at is not null and c.status in ('pending', 'running')
      returning c.id, c.imei, h.id as host`;
    return {
      held: true,
      marked: marked.map((r) => ({ host: r.id, heartbeatAt: r.heartbeat_at })),
      failed: failed.map((r) => ({ id: Number(r.id), imei: r.imei, host: r.host })),
    };
  });
}

/** Give a lease up (at a graceful stop), so another host takes the work over at its next tick. */
export async function releaseLease(sql: Sql, name: string, holder: string): Promise<void> {
  await sql`delete from leases where name = ${name} and holder = ${holder}`;
}

/** Who holds a lease now (tests, `status`); undefined when nobody or it has expired. */
export async function leaseHolder(sql: Sql, name: string): Promise<string | undefined> {
  const [row] = await sql<{ holder: string }[]>`
    select holder from leases where name = ${name} and expires_at > now()`;
  return row?.holder;
}
