-- The modem machine also rests in disabling, enabling and resetting while an operator command is
-- carried out; the modems row mirrors the machine's top-level state.
alter table modems drop constraint modems_state_check;
alter table modems add constraint modems_state_check
  check (state in ('detecting', 'initializing', 'online', 'disabling', 'disabled', 'enabling',
                   'resetting', 'recovering', 'error', 'removed'));
