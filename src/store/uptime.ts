import type { Sql } from 'postgres';

/**
 * Uptime from the journal (issue 21): over a window, the share of the time a modem was wanted that
 * it was online. The journal holds lifecycle transitions only (machines/modemJournal.ts), each the
 * state the modem entered and when, so the state at any instant is the last transition before it.
 *
 * - online: the top-level state `online` (serving, and its rotations and redials: the operator or
 *   the schedule asked for those);
 * - wanted: every state but `disabled`/`disabling` (the operator switched it off). A modem that is
 *   unplugged (`removed`), recovering or in `error` is wanted and not online: that is downtime;
 * - time before a modem's first transition does not count (it was not there yet).
 */
export interface Uptime {
  /** online / wanted, 0..1; null when the modem was never wanted in the window. */
  ratio: number | null;
  onlineSeconds: number;
  wantedSeconds: number;
}

export const UPTIME_WINDOWS = { '24h': 24, '7d': 24 * 7, '30d': 24 * 30 } as const;
export type UptimeWindow = keyof typeof UPTIME_WINDOWS;

/** Uptime of one modem, or of the farm (`imei` null: the sums over every modem), per window. */
export async function uptimeWindows(sql: Sql, imei: string | null): Promise<Record<UptimeWindow, Uptime>> {
  const modem = imei === null ? sql`true` : sql`t.imei = ${imei}`;
  const longest = Math.max(...Object.values(UPTIME_WINDOWS));
  // One pass over the longest window: each transition is a segment until the next one (or now),
  // clipped to each window; the state at a window's start is the transition before it, so every
  // modem's last transition before the longest window is read too.
  const rows = await sql<{ hours: number; online: number; wanted: number }[]>`
    with bounds as (select now() as t1, now() - make_interval(hours => ${longest}) as t0),
    before as (
      select distinct on (t.imei) t.imei, t.seq
      from modem_transitions t, bounds b
      where ${modem} and t.at < b.t0
      order by t.imei, t.seq desc
    ),
    rows as (
      select t.imei, t.seq, t.to_state, t.at
      from modem_transitions t, bounds b
      where ${modem} and (t.at >= b.t0 or (t.imei, t.seq) in (select imei, seq from before))
    ),
    segments as (
      select split_part(to_state, '.', 1) as top, at as s,
             coalesce(lead(at) over (partition by imei order by seq), (select t1 from bounds)) as e
      from rows
    ),
    windows as (select unnest(string_to_array(${Object.values(UPTIME_WINDOWS).join(',')}, ',')::int[]) as hours)
    select w.hours,
      coalesce(sum(greatest(0, extract(epoch from least(s.e, b.t1)
        - greatest(s.s, b.t1 - make_interval(hours => w.hours)))))
        filter (where s.top = 'online'), 0)::float8 as online,
      coalesce(sum(greatest(0, extract(epoch from least(s.e, b.t1)
        - greatest(s.s, b.t1 - make_interval(hours => w.hours)))))
        filter (where s.top not in ('disabled', 'disabling')), 0)::float8 as wanted
    from windows w cross join bounds b left join segments s on true
    group by w.hours`;
  const out = {} as Record<UptimeWindow, Uptime>;
  for (const [name, hours] of Object.entries(UPTIME_WINDOWS) as [UptimeWindow, number][]) {
    const row = rows.find((r) => r.hours === hours);
    const online = row?.online ?? 0;
    const wanted = row?.wanted ?? 0;
    out[name] = {
      ratio: wanted > 0 ? Math.min(1, online / wanted) : null,
      onlineSeconds: Math.round(online),
      wantedSeconds: Math.round(wanted),
    };
  }
  return out;
}
