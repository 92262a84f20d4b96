-- Issue 18, item 3: commands that cannot be jammed. At most one pending rotate per modem, held by the
-- database itself, so raw SQL inserts and concurrent requests (API, CLI, rotation links, schedules,
-- several hosts) cannot queue two. modemfleet inserts with ON CONFLICT and returns the pending one's id.

-- Duplicates queued before this migration: the oldest pending rotate of each modem stays, the later
-- ones are failed (they would have asked for the same rotation).
update modem_commands c
   set status = 'failed', finished_at = now(),
       result = jsonb_build_object('error', 'duplicate',
                                   'message', 'another rotate of this modem was already pending')
 where c.kind = 'rotate' and c.status = 'pending'
   and exists (select 1 from modem_commands o
                where o.imei = c.imei and o.kind = 'rotate' and o.status = 'pending' and o.id < c.id);

create unique index modem_commands_one_pending_rotate on modem_commands (imei)
  where kind = 'rotate' and status = 'pending';
