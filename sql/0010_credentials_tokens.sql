-- Issue 18 item 5: proxy credentials that can be rotated, and scoped API tokens.

-- A `credentials` command: the host that runs the modem restarts its proxy processes with the
-- password stored in its allocation. The new password is written with the command, never in it.
alter table modem_commands drop constraint modem_commands_kind_check;
alter table modem_commands add constraint modem_commands_kind_check
  check (kind in ('rotate', 'reset', 'disable', 'enable', 'credentials'));

-- When a modem's proxy password last changed (null: never since it was allocated).
alter table allocations add column credentials_rotated_at timestamptz;

-- API tokens besides MODEMFLEET_API_TOKEN (which stays the admin token). Only the SHA-256 of a
-- token is stored; the token itself is shown once, when it is created. A revoked token is refused
-- at once (every request looks it up) and its WebSocket clients are disconnected (NOTIFY).
create table api_tokens (
  id           bigserial primary key,
  name         text not null unique check (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
  scope        text not null check (scope in ('admin', 'read-only', 'reseller')),
  token_hash   bytea not null unique check (length(token_hash) = 32),
  created_by   text not null check (length(created_by) between 1 and 128),
  created_at   timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);

-- The modems a reseller token may see and command.
create table api_token_modems (
  token_id bigint not null references api_tokens (id) on delete cascade,
  imei     text not null references modems (imei),
  primary key (token_id, imei)
);

create function notify_api_token() returns trigger
language plpgsql as $$
begin
  if new.revoked_at is not null and old.revoked_at is null then
    perform pg_notify('api_tokens', json_build_object('id', new.id, 'event', 'revoked')::text);
  end if;
  return null;
end;
$$;
create trigger api_tokens_notify after update of revoked_at on api_tokens
  for each row execute function notify_api_token();
