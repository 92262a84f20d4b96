-- The public address (issue 17): what the internet sees through a modem's own port, which behind
-- carrier NAT is not the modem's own (private) address. The current one on the modem row, and every
-- (public, private) pair a modem was seen with: first and last seen, how often.
alter table modems add column public_ip inet;
alter table modems add column public_ip_at timestamptz;

create table modem_addresses (
  imei        text not null references modems (imei),
  public_ip   inet not null,
  private_ip  inet not null,
  first_seen  timestamptz not null default now(),
  last_seen   timestamptz not null default now(),
  times_seen  integer not null default 1 check (times_seen > 0),
  unique (imei, public_ip, private_ip)
);
create index modem_addresses_imei_last_idx on modem_addresses (imei, last_seen desc);
create index modem_addresses_public_idx on modem_addresses (public_ip, last_seen desc);
