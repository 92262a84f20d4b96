-- A host that dies (issue 20 item 3). Every host heartbeats its `hosts` row; one host of the farm at a
-- time (the holder of the `farm` lease) marks hosts whose heartbeat is older than the limit as stale
-- (`stale_at`) and fails their modems' pending and running commands with `host_unavailable`. The
-- host clears its own mark with its next heartbeat (or its next start). The mark NOTIFYs like a
-- start or a stop, so inspectors refresh the host's modems (their `stale` flag) at once.
alter table hosts add column stale_at timestamptz;

-- Farm-wide work claimed through the database: one row per kind of work, held by one host until it
-- expires (renewed by its holder). A row, not an advisory lock, so it also works through a
-- transaction-mode connection pooler.
create table leases (
  name        text primary key check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  holder      text not null check (length(holder) between 1 and 128),
  acquired_at timestamptz not null default now(),
  expires_at  timestamptz not null
);

create or replace function notify_host() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' or new.started_at is distinct from old.started_at then
    perform pg_notify('system_events', json_build_object('type', 'host_started', 'host', new.id, 'at', new.started_at)::text);
  elsif new.stopped_at is not null and old.stopped_at is null then
    perform pg_notify('system_events', json_build_object('type', 'host_stopped', 'host', new.id, 'at', new.stopped_at)::text);
  elsif new.stale_at is not null and old.stale_at is null then
    perform pg_notify('system_events', json_build_object('type', 'host_stale', 'host', new.id, 'at', new.stale_at)::text);
  elsif new.stale_at is null and old.stale_at is not null then
    perform pg_notify('system_events', json_build_object('type', 'host_fresh', 'host', new.id, 'at', now())::text);
  end if;
  return null;
end;
$$;
drop trigger hosts_notify on hosts;
create trigger hosts_notify after insert or update of started_at, stopped_at, stale_at on hosts
  for each row execute function notify_host();
