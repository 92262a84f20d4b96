-- Push alerts: webhooks, one delivery row per webhook x alert event (claimed once across hosts),
-- acknowledgement of alerts, and per-modem silences (a silenced modem's alerts are recorded, marked
-- `silenced`, and get no delivery).

create table webhooks (
  id               bigserial primary key,
  name             text not null unique check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
  url              text not null check (url ~ '^https?://' and length(url) <= 2048),
  secret           text not null check (length(secret) between 16 and 256),
  format           text not null default 'json' check (format in ('json', 'telegram', 'chat')),
  chat_id          text check (chat_id ~ '^-?[0-9]{1,20}$|^@[A-Za-z0-9_]{4,64}$'),
  kinds            text[] check (cardinality(kinds) between 1 and 64),
  severities       text[] check (severities <@ array['info', 'warning', 'critical']
                                 and cardinality(severities) between 1 and 3),
  include_resolved boolean not null default false,
  source           text not null default 'api' check (source in ('api', 'config')),
  created_by       text not null check (length(created_by) between 1 and 128),
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);

alter table alerts
  add column silenced boolean not null default false,
  add column acked_at timestamptz,
  add column acked_by text check (length(acked_by) <= 128);

create table modem_silences (
  imei     text primary key references modems (imei) on delete cascade,
  until    timestamptz not null,
  set_by   text not null check (length(set_by) between 1 and 128),
  set_at   timestamptz not null default now()
);

create table webhook_deliveries (
  id              bigserial primary key,
  webhook_id      bigint not null references webhooks (id) on delete cascade,
  -- null for a test delivery (POST /api/webhooks/:id/test)
  alert_id        bigint references alerts (id) on delete cascade,
  event           text not null check (event in ('raised', 'resolved', 'test')),
  status          text not null default 'pending'
                  check (status in ('pending', 'sending', 'delivered', 'failed')),
  attempts        integer not null default 0,
  next_attempt_at timestamptz not null default now(),
  claimed_by      text,
  claimed_at      timestamptz,
  last_status     integer,
  last_error      text check (length(last_error) <= 500),
  created_at      timestamptz not null default now(),
  finished_at     timestamptz,
  unique (webhook_id, alert_id, event)
);
create index webhook_deliveries_open_idx on webhook_deliveries (webhook_id, id)
  where status in ('pending', 'sending');

-- An alert raised while its modem is silenced is recorded with silenced = true.
create function alert_silenced() returns trigger
language plpgsql as $$
begin
  if new.imei is not null and exists (
       select 1 from modem_silences s where s.imei = new.imei and s.until > new.raised_at) then
    new.silenced := true;
  end if;
  return new;
end;
$$;
create trigger alerts_silenced before insert on alerts
  for each row execute function alert_silenced();

-- Deliveries are queued in the alert's own transaction: nothing raised is missed, nothing twice.
create function queue_alert_deliveries() returns trigger
language plpgsql as $$
declare
  ev text := case when tg_op = 'INSERT' then 'raised' else 'resolved' end;
begin
  if new.silenced then return null; end if;
  if tg_op = 'UPDATE' and (old.resolved_at is not null or new.resolved_at is null) then return null; end if;
  insert into webhook_deliveries (webhook_id, alert_id, event)
  select w.id, new.id, ev from webhooks w
  where (w.kinds is null or new.kind = any (w.kinds))
    and (w.severities is null or new.severity = any (w.severities))
    and (ev = 'raised' or w.include_resolved)
  on conflict do nothing;
  return null;
end;
$$;
create trigger alerts_queue_deliveries after insert or update of resolved_at on alerts
  for each row execute function queue_alert_deliveries();
