-- Issue 17, two small things.
--
-- A change of a modem's public address reaches the inspector live. The modem row's
-- public_ip joins the columns whose change notifies modem_config_change (the inspector then sends
-- the refreshed row to its WebSocket clients, as for wan_ip). Not the journal: a public address
-- that changes without a rotation is a fact about the carrier, not a lifecycle transition; it is
-- kept in modem_addresses (history) instead.

create or replace function notify_modem_config() returns trigger
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
    if new.public_ip is distinct from old.public_ip then changed := array_append(changed, 'public_ip'); end if;
  end if;
  if cardinality(changed) > 0 then
    perform pg_notify('modem_config_change', json_build_object(
      'imei', new.imei, 'host', new.host_id, 'changed', changed,
      'desiredState', new.desired_state, 'wanIp', new.wan_ip)::text);
  end if;
  return null;
end;
$$;

drop trigger modems_config_notify on modems;
create trigger modems_config_notify after update on modems
  for each row when (new.desired_state is distinct from old.desired_state
                     or new.iccid is distinct from old.iccid
                     or new.host_id is distinct from old.host_id
                     or new.usb_path is distinct from old.usb_path
                     or new.interface is distinct from old.interface
                     or new.wan_ip is distinct from old.wan_ip
                     or new.public_ip is distinct from old.public_ip)
  execute function notify_modem_config();

-- Issue 17: a modem's schedule can be "off" under a farm default (config rotation.schedule): a row
-- with no interval. Deleting the row makes the farm default apply again.
alter table rotation_schedules alter column interval_seconds drop not null;
alter table rotation_schedules add constraint rotation_schedules_off_check
  check (interval_seconds is not null or jitter_seconds = 0);
