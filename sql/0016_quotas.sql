-- Issue 19 item 2: a byte quota per period (day, month, total; UTC) and an expiry per modem.
--
-- `used` is the payload bytes (download + upload, the customer's side of its ports) counted in the
-- period that started at `period_start`: `record_traffic` (0017) adds each sample's bytes and
-- moves to the next period when a sample falls in it. A quota counts from when it is set (or its
-- period reset), then each period from its natural start: 00:00 UTC for a day, 00:00 UTC of day
-- `month_start_day` for a month; `total` never rolls over. The owning host enforces it in the
-- kernel (src/fleet/trafficMonitor.ts) and records here why the port is closed (`closed_reason`)
-- and which alert level (80, 100) it raised in this period (once, whatever restarts).

create table modem_quotas (
  imei            text primary key references modems (imei),
  bytes           bigint check (bytes between 1 and 9007199254740991),
  period          text check (period in ('day', 'month', 'total')),
  month_start_day smallint not null default 1 check (month_start_day between 1 and 28),
  period_start    timestamptz not null default now(),
  used            bigint not null default 0 check (used >= 0),
  alert_level     smallint not null default 0 check (alert_level in (0, 80, 100)),
  expires_at      timestamptz,
  closed_reason   text check (closed_reason in ('quota_exceeded', 'expired')),
  closed_at       timestamptz,
  updated_at      timestamptz not null default now(),
  updated_by      text not null check (length(updated_by) between 1 and 128),
  check ((bytes is null) = (period is null)),
  check ((closed_reason is null) = (closed_at is null))
);

-- The start of the period that holds `at` (UTC); `since` for a total (it never rolls over).
create function traffic_period_start(period text, month_start_day integer, at timestamptz, since timestamptz)
returns timestamptz
language sql immutable as $$
  select case period
    when 'day' then date_trunc('day', at at time zone 'UTC') at time zone 'UTC'
    when 'month' then (
      select case when at >= s then s
             else (date_trunc('month', at at time zone 'UTC') - interval '1 month'
                   + (month_start_day - 1) * interval '1 day') at time zone 'UTC' end
      from (select (date_trunc('month', at at time zone 'UTC')
                    + (month_start_day - 1) * interval '1 day') at time zone 'UTC' as s) m)
    else since
  end
$$;

-- The owning host listens on modem_config_change: a quota or expiry set, raised, reset or cleared
-- reaches it at once (its catch-up after every LISTEN, and a poll, read the table anyway).
create function notify_modem_quota() returns trigger
language plpgsql as $$
declare
  q modem_quotas;
begin
  q := case when tg_op = 'DELETE' then old else new end;
  perform pg_notify('modem_config_change', json_build_object(
    'imei', q.imei, 'host', (select host_id from modems where imei = q.imei),
    'changed', array['quota'])::text);
  return null;
end;
$$;
create trigger modem_quotas_notify_change after insert or delete on modem_quotas
  for each row execute function notify_modem_quota();
create trigger modem_quotas_notify after update on modem_quotas
  for each row when (new.bytes is distinct from old.bytes
                     or new.period is distinct from old.period
                     or new.month_start_day is distinct from old.month_start_day
                     or new.period_start is distinct from old.period_start
                     or new.expires_at is distinct from old.expires_at
                     or new.closed_reason is distinct from old.closed_reason)
  execute function notify_modem_quota();
