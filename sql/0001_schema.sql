-- modemfleet schema v1: hosts, modems, the transition journal, allocations, commands, health, alerts.
-- Released migrations are never edited: add a new numbered file instead.

create table hosts (
  id           text primary key check (id ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$'),
  name         text not null check (length(name) between 1 and 255),
  started_at   timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  stopped_at   timestamptz
);

create table modems (
  imei          text primary key check (imei ~ '^[0-9]{15}$'),
  host_id       text references hosts (id),
  usb_path      text check (length(usb_path) <= 255),
  model         text check (length(model) <= 64),
  iccid         text check (iccid ~ '^[0-9]{18,20}$'),
  imsi          text check (imsi ~ '^[0-9]{6,15}$'),
  firmware      text check (length(firmware) <= 64),
  operator      text check (length(operator) <= 64),
  technology    text check (length(technology) <= 16),
  rssi          smallint,
  rsrp          smallint,
  rsrq          smallint,
  sinr          smallint,
  state         text not null default 'detecting'
                check (state in ('detecting', 'initializing', 'online', 'disabled', 'recovering', 'error', 'removed')),
  substate      text check (length(substate) <= 128),
  reason        text check (reason ~ '^[a-z][a-z0-9_]{0,63}$'),
  wan_ip        inet,
  interface     text check (interface ~ '^[A-Za-z0-9._-]{1,15}$'),
  desired_state text not null default 'enabled' check (desired_state in ('enabled', 'disabled')),
  -- seq of the last journal row; the journal is contiguous from 1, so this is also its length
  seq           bigint not null default 0 check (seq >= 0),
  state_since   timestamptz not null default now(),
  first_seen_at timestamptz not null default now(),
  last_seen_at  timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);
create index modems_host_idx on modems (host_id);
create index modems_state_idx on modems (state);

-- The journal: every transition of every modem, in order. (imei, seq) is the idempotency key.
create table modem_transitions (
  imei       text not null references modems (imei),
  seq        bigint not null check (seq >= 1),
  from_state text check (length(from_state) <= 128),
  to_state   text not null check (length(to_state) <= 128),
  event      text not null check (length(event) <= 64),
  detail     jsonb not null default '{}' check (pg_column_size(detail) <= 4096),
  at         timestamptz not null,
  host_id    text,
  primary key (imei, seq)
);
create index modem_transitions_at_idx on modem_transitions (at);

-- Ports, routing tables and interface ids per host, sticky per IMEI, each unique on its host.
create table allocations (
  host_id       text not null references hosts (id),
  imei          text not null check (imei ~ '^[0-9]{15}$'),
  slot          integer not null check (slot >= 0),
  http_port     integer not null check (http_port between 1 and 65535),
  socks_port    integer not null check (socks_port between 1 and 65535),
  routing_table integer not null check (routing_table between 1 and 252 or routing_table between 256 and 2147483647),
  iface_id      integer not null check (iface_id >= 0),
  proxy_user    text not null check (proxy_user ~ '^[a-z0-9]{4,32}$'),
  proxy_password text not null check (proxy_password ~ '^[A-Za-z0-9_-]{12,64}$'),
  created_at    timestamptz not null default now(),
  primary key (host_id, imei),
  unique (host_id, slot),
  unique (host_id, http_port),
  unique (host_id, socks_port),
  unique (host_id, routing_table),
  unique (host_id, iface_id),
  check (http_port <> socks_port)
);

create table modem_commands (
  id           bigserial primary key,
  imei         text not null references modems (imei),
  kind         text not null check (kind in ('rotate', 'reset', 'disable', 'enable')),
  requested_by text not null default current_user check (length(requested_by) between 1 and 128),
  requested_at timestamptz not null default now(),
  status       text not null default 'pending' check (status in ('pending', 'running', 'done', 'failed')),
  claimed_by   text,
  claimed_at   timestamptz,
  result       jsonb check (result is null or pg_column_size(result) <= 4096),
  finished_at  timestamptz,
  check ((status in ('done', 'failed')) = (finished_at is not null))
);
create index modem_commands_pending_idx on modem_commands (imei, id) where status = 'pending';
create index modem_commands_running_idx on modem_commands (claimed_by) where status = 'running';

-- Health time series; prune with prune_modem_health(interval).
create table modem_health (
  imei       text not null references modems (imei),
  at         timestamptz not null default now(),
  rssi       smallint,
  rsrp       smallint,
  rsrq       smallint,
  sinr       smallint,
  operator   text check (length(operator) <= 64),
  technology text check (length(technology) <= 16)
);
create index modem_health_imei_at_idx on modem_health (imei, at desc);
create index modem_health_at_idx on modem_health (at);

create table alerts (
  id          bigserial primary key,
  host_id     text,
  imei        text,
  kind        text not null check (kind ~ '^[a-z][a-z0-9_]{0,63}$'),
  severity    text not null check (severity in ('info', 'warning', 'critical')),
  message     text not null check (length(message) <= 1000),
  detail      jsonb not null default '{}' check (pg_column_size(detail) <= 4096),
  raised_at   timestamptz not null default now(),
  resolved_at timestamptz
);
create index alerts_open_idx on alerts (raised_at desc) where resolved_at is null;

------------------------------------------------------------------------------------------------------
-- Journal append: one call per batch, set-based. Rows at or below a modem's stored seq are
-- duplicates (skipped: replay is idempotent). New rows are stored as far as they continue the
-- modem's sequence without a gap; rows after a missing seq are not stored and the modem is reported
-- with gap_at (the seq it waits for). The modems row takes the state of the last stored transition.
------------------------------------------------------------------------------------------------------
create function journal_batch_rows(batch jsonb)
returns table (imei text, seq bigint, from_state text, to_state text, event text, detail jsonb,
               at timestamptz, host_id text, reason text, wan_ip inet)
language sql immutable as $$
  select distinct on (b.imei, b.seq) b.imei, b.seq, b.from_state, b.to_state, b.event,
         coalesce(b.detail, '{}'::jsonb), b.at, b.host_id, b.reason, b.wan_ip
  from jsonb_to_recordset(batch) as b(imei text, seq bigint, from_state text, to_state text, event text,
       detail jsonb, at timestamptz, host_id text, reason text, wan_ip inet)
  order by b.imei, b.seq;
$$;

create function append_transitions(batch jsonb)
returns table (imei text, stored integer, last_seq bigint, gap_at bigint)
language plpgsql as $$
#variable_conflict use_column
begin
  -- modems seen for the first time get a row; then all rows of the batch are locked in one order
  insert into modems as m (imei, host_id)
  select distinct b.imei, b.host_id from journal_batch_rows(batch) b
  where not exists (select 1 from modems x where x.imei = b.imei)
  on conflict on constraint modems_pkey do nothing;
  perform 1 from modems m
  where m.imei in (select b.imei from journal_batch_rows(batch) b)
  order by m.imei for update;

  return query
  with batch_rows as (
    select * from journal_batch_rows(batch)
  ),
  fresh as (
    select b.*, m.seq as stored_seq, row_number() over (partition by b.imei order by b.seq) as rn
    from batch_rows b join modems m on m.imei = b.imei
    where b.seq > m.seq
  ),
  -- the contiguous run after the stored seq; anything after a missing seq waits for a later batch
  ok_rows as (
    select * from fresh f where f.seq = f.stored_seq + f.rn
  ),
  inserted as (
    insert into modem_transitions (imei, seq, from_state, to_state, event, detail, at, host_id)
    select o.imei, o.seq, o.from_state, o.to_state, o.event, o.detail, o.at, o.host_id
    from ok_rows o
    order by o.imei, o.seq
    on conflict on constraint modem_transitions_pkey do nothing
    returning modem_transitions.imei
  ),
  last_rows as (
    select distinct on (o.imei) o.*
    from ok_rows o
    order by o.imei, o.seq desc
  ),
  updated as (
    update modems m set
      seq = l.seq,
      state = split_part(l.to_state, '.', 1),
      substate = nullif(l.to_state, split_part(l.to_state, '.', 1)),
      reason = case when split_part(l.to_state, '.', 1) = 'error' then l.reason end,
      wan_ip = case when split_part(l.to_state, '.', 1) = 'online' then coalesce(l.wan_ip, m.wan_ip) end,
      host_id = coalesce(l.host_id, m.host_id),
      state_since = case when split_part(l.to_state, '.', 1) = m.state then m.state_since else l.at end,
      last_seen_at = greatest(m.last_seen_at, l.at),
      updated_at = now()
    from last_rows l
    where m.imei = l.imei
    returning m.imei
  ),
  inserted_counts as (
    select i.imei, count(*)::integer as n from inserted i group by i.imei
  ),
  fresh_counts as (
    select f.imei, count(*) as fresh_n, count(*) filter (where f.seq = f.stored_seq + f.rn) as ok_n
    from fresh f group by f.imei
  )
  -- modems is read here as it was before this statement's update: m.seq is the stored seq
  select m.imei,
         coalesce(ic.n, 0),
         m.seq + coalesce(fc.ok_n, 0),
         case when fc.fresh_n > fc.ok_n then m.seq + fc.ok_n + 1 end
  from modems m
  left join fresh_counts fc on fc.imei = m.imei
  left join inserted_counts ic on ic.imei = m.imei
  where m.imei in (select b.imei from batch_rows b);
end;
$$;

-- Retention for the health series; returns the number of rows deleted.
create function prune_modem_health(older_than interval) returns bigint
language sql as $$
  with gone as (delete from modem_health where at < now() - older_than returning 1)
  select count(*) from gone;
$$;

------------------------------------------------------------------------------------------------------
-- NOTIFY: small JSON payloads (ids and states, never credentials), one per row, set-based triggers.
------------------------------------------------------------------------------------------------------
create function notify_transitions() returns trigger
language plpgsql as $$
begin
  perform pg_notify('modem_status_change', json_build_object(
    'imei', n.imei, 'seq', n.seq, 'from', n.from_state, 'to', n.to_state, 'event', n.event,
    'at', n.at, 'host', n.host_id)::text)
  from (select * from inserted order by imei, seq) n;
  return null;
end;
$$;
create trigger modem_transitions_notify after insert on modem_transitions
  referencing new table as inserted for each statement execute function notify_transitions();

create function notify_health() returns trigger
language plpgsql as $$
begin
  perform pg_notify('modem_health', json_build_object(
    'imei', n.imei, 'at', n.at, 'rssi', n.rssi, 'rsrp', n.rsrp, 'rsrq', n.rsrq, 'sinr', n.sinr,
    'operator', n.operator, 'technology', n.technology)::text)
  from inserted n;
  return null;
end;
$$;
create trigger modem_health_notify after insert on modem_health
  referencing new table as inserted for each statement execute function notify_health();

create function notify_modem_config() returns trigger
language plpgsql as $$
declare
  changed text[] := array[]::text[];
begin
  if tg_op = 'INSERT' then
    changed := array['created'];
  else
    if new.desired_state is distinct from old.desired_state then changed := array_append(changed, 'desired_state'); end if;
    if new.iccid is distinct from old.iccid then changed := array_append(changed, 'iccid'); end if;
    if new.host_id is distinct from old.host_id then changed := array_append(changed, 'host_id'); end if;
    if new.usb_path is distinct from old.usb_path then changed := array_append(changed, 'usb_path'); end if;
    if new.interface is distinct from old.interface then changed := array_append(changed, 'interface'); end if;
    if new.wan_ip is distinct from old.wan_ip then changed := array_append(changed, 'wan_ip'); end if;
  end if;
  if cardinality(changed) > 0 then
    perform pg_notify('modem_config_change', json_build_object(
      'imei', new.imei, 'host', new.host_id, 'changed', changed,
      'desiredState', new.desired_state, 'wanIp', new.wan_ip)::text);
  end if;
  return null;
end;
$$;
create trigger modems_config_notify after insert or update on modems
  for each row execute function notify_modem_config();

create function notify_alert() returns trigger
language plpgsql as $$
begin
  perform pg_notify('modem_alerts', json_build_object(
    'id', new.id, 'imei', new.imei, 'host', new.host_id, 'kind', new.kind, 'severity', new.severity,
    'resolved', new.resolved_at is not null)::text);
  return null;
end;
$$;
create trigger alerts_notify after insert or update of resolved_at on alerts
  for each row execute function notify_alert();

create function notify_host() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' or new.started_at is distinct from old.started_at then
    perform pg_notify('system_events', json_build_object('type', 'host_started', 'host', new.id, 'at', new.started_at)::text);
  elsif new.stopped_at is not null and old.stopped_at is null then
    perform pg_notify('system_events', json_build_object('type', 'host_stopped', 'host', new.id, 'at', new.stopped_at)::text);
  end if;
  return null;
end;
$$;
create trigger hosts_notify after insert or update of started_at, stopped_at on hosts
  for each row execute function notify_host();

create function notify_command() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' or new.status is distinct from old.status then
    perform pg_notify('modem_commands', json_build_object(
      'id', new.id, 'imei', new.imei, 'kind', new.kind, 'status', new.status)::text);
  end if;
  return null;
end;
$$;
create trigger modem_commands_notify after insert or update of status on modem_commands
  for each row execute function notify_command();
