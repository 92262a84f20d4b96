-- Placeholder so that this branch's 0010 applies on its own: number 0009 belongs to work merged
-- elsewhere (main's 0009_public_ip_schedule_off.sql; the command-queue branch). When this branch is
-- merged, delete this file and keep the real 0009.
select 1;
