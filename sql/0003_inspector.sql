-- The inspector: the address clients reach a host's proxies at, and rotation links.

-- Each host advertises where its proxy ports are reached (the API's proxy.host).
alter table hosts add column proxy_host text check (proxy_host ~ '^[A-Za-z0-9.:_-]{1,253}$');

-- Rotation links: GET /rotate/<secret> queues a rotate command without the API token, as
-- commercial farms offer. Only the SHA-256 of the secret is stored; one active link per modem.
create table rotation_links (
  id           bigserial primary key,
  imei         text not null references modems (imei),
  secret_hash  bytea not null unique check (length(secret_hash) = 32),
  created_by   text not null check (length(created_by) between 1 and 128),
  created_at   timestamptz not null default now(),
  last_used_at timestamptz,
  revoked_at   timestamptz
);
create unique index rotation_links_active_idx on rotation_links (imei) where revoked_at is null;
