-- Scheduled rotation (issue 17, item 5) and the one rule for early and duplicate rotate requests.

-- A modem's own rotation schedule: every interval_seconds ± uniform jitter_seconds, counted from its
-- last rotation (or from updated_at, the schedule's start). Modems without a row follow the farm
-- default (config rotation.schedule), if any. The floor of interval_seconds (policy
-- rotationScheduleMinSeconds, 60 s) is checked by modemfleet; the table only keeps it sane.
create table rotation_schedules (
  imei             text primary key references modems (imei),
  interval_seconds integer not null check (interval_seconds between 1 and 2592000),
  jitter_seconds   integer not null default 0 check (jitter_seconds >= 0 and jitter_seconds < interval_seconds),
  updated_at       timestamptz not null default now(),
  updated_by       text not null check (length(updated_by) between 1 and 128)
);

-- A modem's last finished rotation: the scheduler's basis and the claim's minimum interval.
create index modem_commands_rotate_finished_idx on modem_commands (imei, finished_at desc)
  where kind = 'rotate' and finished_at is not null;
