-- Issue 19 items 3 and 4: speed limits, an allowlist and more logins per modem.
--
-- A change is written with a `credentials` command in the same transaction (as a password rotation
-- is): the host that serves the modem re-reads its login, logins, allowlist and limits and applies
-- them (src/fleet/modem.ts). Passwords are stored as the proxies need them (they are written into
-- the proxies' 0600 configs), like allocations.proxy_password.

-- Logins besides the modem's own (allocations.proxy_user), each with its own password, the ports it
-- works on and an optional expiry (the serving host drops it at that time, by its own timer).
create table modem_logins (
  imei       text not null references modems (imei) on delete cascade,
  username   text not null check (username ~ '^[a-z0-9][a-z0-9_-]{2,31}$'),
  password   text not null check (password ~ '^[A-Za-z0-9_-]{12,64}$'),
  ports      text[] not null default array['http', 'socks']
             check (cardinality(ports) between 1 and 2 and ports <@ array['http', 'socks']),
  expires_at timestamptz,
  created_by text not null check (length(created_by) between 1 and 128),
  created_at timestamptz not null default now(),
  primary key (imei, username)
);

-- The allowlist (client networks that need no password) and the speed limits of a modem, kbit/s
-- (1 kbit = 1000 bits; null: no limit).
create table modem_access (
  imei          text primary key references modems (imei) on delete cascade,
  allowlist     cidr[] not null default '{}' check (cardinality(allowlist) <= 64),
  download_kbps integer check (download_kbps between 8 and 10000000),
  upload_kbps   integer check (upload_kbps between 8 and 10000000),
  updated_by    text not null check (length(updated_by) between 1 and 128),
  updated_at    timestamptz not null default now()
);

-- What serves a host's ports, so that the API refuses at once what that backend cannot do (a second
-- login on microsocks' SOCKS port). Null: a host that has not said (an older version).
alter table hosts add column proxy_backend text
  check (proxy_backend in ('3proxy', 'microsocks+tinyproxy'));
