-- Issue 20: an inspector keeps every modem's row (with its allocation: ports, credentials) in memory
-- to answer snapshots without reading 10,000 rows each time, and re-reads a row when a notification
-- names it. A modem's allocation changed (created when it first came online on a host, credentials
-- rotated, removed) without any notification: say so on `modem_config_change` like the modem's own
-- columns, so the row is re-read (and clients see new credentials live, which they did not).
create function notify_allocation() returns trigger
language plpgsql as $$
declare
  r allocations;
begin
  if tg_op = 'DELETE' then r := old; else r := new; end if;
  perform pg_notify('modem_config_change', json_build_object(
    'imei', r.imei, 'host', r.host_id, 'changed', array['allocation'])::text);
  return null;
end;
$$;

create trigger allocations_notify after insert or delete on allocations
  for each row execute function notify_allocation();
create trigger allocations_notify_update after update on allocations
  for each row when (new.http_port is distinct from old.http_port
                     or new.socks_port is distinct from old.socks_port
                     or new.proxy_user is distinct from old.proxy_user
                     or new.proxy_password is distinct from old.proxy_password)
  execute function notify_allocation();
