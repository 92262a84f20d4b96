-- The journal at farm scale: cheaper appends, one NOTIFY per batch, and retention.
-- Every statement here changes the catalog only (no table is rewritten or scanned), so the migration
-- takes milliseconds on a journal of any size; BENCHMARKS.md has the figures on ten million rows.

-- Appends (of this version and the one before) lock modems rows, then write modem_transitions: this
-- migration takes the two tables in the same order, or it and a concurrent append can deadlock.
lock table modems, modem_transitions in access exclusive mode;

------------------------------------------------------------------------------------------------------
-- Append cost (BENCHMARKS.md has the profile).
-- The per-row foreign key to modems went: append_transition_arrays creates and locks the modems row
-- of every transition it stores, in the same transaction, so the check (one lookup per row) only
-- repeated it; a CHECK keeps a hand-written row's imei an IMEI.
-- The time index on the journal went: retention walks each modem's journal by (imei, seq) from its
-- oldest row, and nothing else searches the journal by time alone.
-- The state index on modems went (a few thousand rows are read whole anyway) and modems pages keep
-- room for a second version of their rows (new pages; the table is small): the mirror update of an
-- append then stays on its page (HOT, no index entries). The config-change trigger filters with
-- WHEN, so that update no longer calls a function per row.
------------------------------------------------------------------------------------------------------
alter table modem_transitions drop constraint modem_transitions_imei_fkey;
-- (NOT VALID: existing rows are not scanned; new rows are checked. host_id was unbounded: a row's
-- notification must stay far below 8000 bytes.)
alter table modem_transitions add constraint modem_transitions_imei_check
  check (imei ~ '^[0-9]{15}$') not valid;
alter table modem_transitions add constraint modem_transitions_host_id_check
  check (length(host_id) <= 64) not valid;
drop index modem_transitions_at_idx;
drop index modems_state_idx;
alter table modems set (fillfactor = 50);

drop trigger modems_config_notify on modems;
create trigger modems_config_notify_insert after insert on modems
  for each row execute function notify_modem_config();
create trigger modems_config_notify after update on modems
  for each row when (new.desired_state is distinct from old.desired_state
                     or new.iccid is distinct from old.iccid
                     or new.host_id is distinct from old.host_id
                     or new.usb_path is distinct from old.usb_path
                     or new.interface is distinct from old.interface
                     or new.wan_ip is distinct from old.wan_ip)
  execute function notify_modem_config();

------------------------------------------------------------------------------------------------------
-- Journal append, one array per column (the server parses an array an order of magnitude faster
-- than the same rows as jsonb, and each array once). Semantics as append_transitions(jsonb): rows
-- at or below the modem's stored seq (modems.seq, the high-water mark, which retention never lowers)
-- are duplicates and skipped, so a replayed row whose journal row was already pruned is not stored
-- again; new rows are stored as far as they continue the modem's sequence; rows after a missing seq
-- are not, and gap_at names the seq the modem waits for. The modems row takes the state of the last
-- stored transition.
------------------------------------------------------------------------------------------------------
create function append_transition_arrays(
  imeis text[], seqs bigint[], from_states text[], to_states text[], events text[], details jsonb[],
  ats timestamptz[], host_ids text[], reasons text[], wan_ips inet[])
returns table (imei text, stored integer, last_seq bigint, gap_at bigint)
language plpgsql
-- planned for each batch's arrays: a generic plan guesses a handful of rows and joins them in loops
set plan_cache_mode = force_custom_plan
as $$
#variable_conflict use_column
declare
  n integer := coalesce(cardinality(imeis), 0);
  batch_imeis text[];
  locked integer;
  simple boolean;
  run_imeis text[];
  run_counts integer[];
  run_lasts bigint[];
begin
  if n = 0 then
    return;
  end if;
  if coalesce(cardinality(seqs), 0) <> n or coalesce(cardinality(from_states), 0) <> n
     or coalesce(cardinality(to_states), 0) <> n or coalesce(cardinality(events), 0) <> n
     or coalesce(cardinality(details), 0) <> n or coalesce(cardinality(ats), 0) <> n
     or coalesce(cardinality(host_ids), 0) <> n or coalesce(cardinality(reasons), 0) <> n
     or coalesce(cardinality(wan_ips), 0) <> n then
    raise exception 'append_transition_arrays: every array must have % elements', n
      using errcode = '22023';
  end if;
  select array_agg(distinct x) into batch_imeis from unnest(imeis) x;

  -- one writer per modem at a time: all modems rows of the batch are locked in one order; modems
  -- seen for the first time get a row first (joins with unnest, not "= any(array)": a generic plan
  -- would compare every row with every element)
  select count(*) into locked from (
    select 1 from unnest(batch_imeis) u(imei) join modems m on m.imei = u.imei
    order by m.imei for update of m) x;
  if locked < cardinality(batch_imeis) then
    insert into modems as m (imei, host_id)
    select b.imei, min(b.host_id) from unnest(imeis, host_ids) as b(imei, host_id)
    group by b.imei order by b.imei
    on conflict on constraint modems_pkey do nothing;
    perform 1 from unnest(batch_imeis) u(imei) join modems m on m.imei = u.imei
    order by m.imei for update of m;
  end if;

  -- The usual batch: each modem's rows are distinct seqs that continue its stored seq without a
  -- gap. Then every row is stored as it is: no sorting, de-duplication or run detection.
  select bool_and(r.first_seq = m.seq + 1 and r.last_seq - r.first_seq + 1 = r.k and r.copies = 1),
         array_agg(r.imei), array_agg(r.k), array_agg(r.last_seq)
  into simple, run_imeis, run_counts, run_lasts
  from (select p.imei, min(p.seq) as first_seq, max(p.seq) as last_seq, count(*)::integer as k,
               max(p.copies) as copies
        from (select b.imei, b.seq, count(*) as copies
              from unnest(imeis, seqs) as b(imei, seq) group by b.imei, b.seq) p
        group by p.imei) r
  join modems m on m.imei = r.imei;
  if simple then
    begin
      with batch_rows as (
        select b.*
        from unnest(imeis, seqs, from_states, to_states, events, details, ats, host_ids, reasons, wan_ips)
          as b(imei, seq, from_state, to_state, event, detail, at, host_id, reason, wan_ip)
      ),
      inserted as (
        insert into modem_transitions (imei, seq, from_state, to_state, event, detail, at, host_id)
        select b.imei, b.seq, b.from_state, b.to_state, b.event, coalesce(b.detail, '{}'), b.at, b.host_id
        from batch_rows b
      ),
      updated as (
        update modems m set
          seq = l.seq,
          state = split_part(l.to_state, '.', 1),
          substate = nullif(l.to_state, split_part(l.to_state, '.', 1)),
          reason = case when split_part(l.to_state, '.', 1) = 'error' then l.reason end,
          wan_ip = case when split_part(l.to_state, '.', 1) = 'online' then coalesce(l.wan_ip, m.wan_ip) end,
          host_id = coalesce(l.host_id, m.host_id),
          state_since = case when split_part(l.to_state, '.', 1) = m.state then m.state_since else l.at end,
          last_seen_at = greatest(m.last_seen_at, l.at),
          updated_at = now()
        from unnest(run_imeis, run_lasts) as r(imei, last_seq)
        join batch_rows l on l.imei = r.imei and l.seq = r.last_seq
        where m.imei = r.imei
        returning 1
      )
      select count(*) into locked from updated;
      return query select r.imei, r.k, r.last_seq, null::bigint
        from unnest(run_imeis, run_counts, run_lasts) as r(imei, k, last_seq);
      return;
    exception when unique_violation then
      -- a row above the stored seq exists (written around this function): the general path below
      -- skips what is already there
      null;
    end;
  end if;

  -- Any other batch (a replay, duplicates, a gap): rows at or below the stored seq are skipped and
  -- each modem stores the run that continues its stored seq.
  return query
  with batch_rows as (
    select distinct on (b.imei, b.seq) b.*
    from unnest(imeis, seqs, from_states, to_states, events, details, ats, host_ids, reasons, wan_ips)
      as b(imei, seq, from_state, to_state, event, detail, at, host_id, reason, wan_ip)
    order by b.imei, b.seq
  ),
  fresh as (
    select b.*, m.seq as stored_seq, row_number() over (partition by b.imei order by b.seq) as rn
    from batch_rows b join modems m on m.imei = b.imei
    where b.seq > m.seq
  ),
  -- the contiguous run after the stored seq; anything after a missing seq waits for a later batch
  ok_rows as (
    select * from fresh f where f.seq = f.stored_seq + f.rn
  ),
  inserted as (
    insert into modem_transitions (imei, seq, from_state, to_state, event, detail, at, host_id)
    select o.imei, o.seq, o.from_state, o.to_state, o.event, coalesce(o.detail, '{}'), o.at, o.host_id
    from ok_rows o
    on conflict on constraint modem_transitions_pkey do nothing
    returning modem_transitions.imei
  ),
  last_rows as (
    select distinct on (o.imei) o.*
    from ok_rows o
    order by o.imei, o.seq desc
  ),
  updated as (
    update modems m set
      seq = l.seq,
      state = split_part(l.to_state, '.', 1),
      substate = nullif(l.to_state, split_part(l.to_state, '.', 1)),
      reason = case when split_part(l.to_state, '.', 1) = 'error' then l.reason end,
      wan_ip = case when split_part(l.to_state, '.', 1) = 'online' then coalesce(l.wan_ip, m.wan_ip) end,
      host_id = coalesce(l.host_id, m.host_id),
      state_since = case when split_part(l.to_state, '.', 1) = m.state then m.state_since else l.at end,
      last_seen_at = greatest(m.last_seen_at, l.at),
      updated_at = now()
    from last_rows l
    where m.imei = l.imei
    returning m.imei
  ),
  inserted_counts as (
    select i.imei, count(*)::integer as n from inserted i group by i.imei
  ),
  fresh_counts as (
    select f.imei, count(*) as fresh_n, count(*) filter (where f.seq = f.stored_seq + f.rn) as ok_n
    from fresh f group by f.imei
  )
  -- modems is read here as it was before this statement's update: m.seq is the stored seq
  select m.imei,
         coalesce(ic.n, 0),
         m.seq + coalesce(fc.ok_n, 0),
         case when fc.fresh_n > fc.ok_n then m.seq + fc.ok_n + 1 end
  from unnest(batch_imeis) u(imei)
  join modems m on m.imei = u.imei
  left join fresh_counts fc on fc.imei = m.imei
  left join inserted_counts ic on ic.imei = m.imei;
end;
$$;

-- The jsonb form stays for callers in SQL; it unpacks the batch once and appends through the arrays.
create or replace function append_transitions(batch jsonb)
returns table (imei text, stored integer, last_seq bigint, gap_at bigint)
language sql as $$
  -- the aggregates of one pass see the rows in the same order, so the arrays stay aligned
  select a.*
  from (
    select array_agg(b.imei) as imeis, array_agg(b.seq) as seqs, array_agg(b.from_state) as from_states,
           array_agg(b.to_state) as to_states, array_agg(b.event) as events, array_agg(b.detail) as details,
           array_agg(b.at) as ats, array_agg(b.host_id) as host_ids, array_agg(b.reason) as reasons,
           array_agg(b.wan_ip) as wan_ips
    from jsonb_to_recordset(batch)
      as b(imei text, seq bigint, from_state text, to_state text, event text, detail jsonb,
           at timestamptz, host_id text, reason text, wan_ip inet)
  ) x
  cross join lateral append_transition_arrays(x.imeis, x.seqs, x.from_states, x.to_states, x.events,
                                              x.details, x.ats, x.host_ids, x.reasons, x.wan_ips) a;
$$;
-- journal_batch_rows(jsonb) is no longer used but stays: an append of the old version waiting for
-- this migration's locks re-plans its statements after the commit and would fail without it.

------------------------------------------------------------------------------------------------------
-- NOTIFY modem_status_change: one notification per batch of stored rows instead of one per row,
-- {"transitions":[{imei, seq, from, to, event, at, host}, ...]} in (imei, seq) order, split so that
-- every payload stays below 7,950 bytes (PostgreSQL's limit is 8,000). Each element is exactly the
-- payload one row used to send.
------------------------------------------------------------------------------------------------------
create or replace function notify_transitions() returns trigger
language plpgsql as $$
declare
  item text;
  buf text := '';
  k integer := 0;
begin
  for item in
    select row_to_json(r)::text
    from (select n.imei, n.seq, n.from_state as "from", n.to_state as "to", n.event, n.at,
                 n.host_id as host
          from inserted n order by n.imei, n.seq) r
  loop
    if k > 0 and octet_length(buf) + octet_length(item) > 7900 then
      perform pg_notify('modem_status_change', '{"transitions":[' || buf || ']}');
      buf := '';
      k := 0;
    end if;
    buf := case when k = 0 then item else buf || ',' || item end;
    k := k + 1;
  end loop;
  if k > 0 then
    perform pg_notify('modem_status_change', '{"transitions":[' || buf || ']}');
  end if;
  return null;
end;
$$;

------------------------------------------------------------------------------------------------------
-- Retention: prune_modem_transitions(older_than, max_rows) deletes at most about max_rows of the
-- oldest journal rows and returns how many it deleted (0: nothing left to prune); call it until 0.
-- Each call is one short transaction that takes row locks on the rows it deletes only, so appends
-- (which insert above modems.seq) never wait for it. What is kept of a modem's journal is always a
-- suffix: rows go from its lowest seq upwards and stop at the first row younger than the cutoff (a
-- placeholder written late can be younger than the row after it), so seq stays contiguous within
-- what is retained. modems.seq is not touched: the next append and every replay still see the
-- modem's high-water mark.
------------------------------------------------------------------------------------------------------
create function prune_modem_transitions(older_than interval, max_rows integer default 5000)
returns bigint
language sql as $$
  with heads as (
    -- modems whose oldest journal row is past the cutoff
    select m.imei, h.seq as first_seq
    from modems m
    cross join lateral (
      select t.seq, t.at from modem_transitions t where t.imei = m.imei order by t.seq limit 1
    ) h
    where h.at < now() - older_than
  ),
  -- rows looked at per modem: the budget shared among them, from 100 to 10,000 each
  per_modem as (
    select least(10000, greatest(100, greatest(max_rows, 1) / greatest(count(*), 1)))::integer as n
    from heads
  ),
  chosen as (
    select h.imei, h.first_seq from heads h
    order by h.imei
    limit greatest(1, greatest(max_rows, 1) / (select n from per_modem))
  ),
  bounds as (
    select c.imei, c.first_seq,
           (select coalesce(min(s.seq) filter (where s.at >= now() - older_than), max(s.seq) + 1)
            from (select t.seq, t.at from modem_transitions t
                  where t.imei = c.imei and t.seq >= c.first_seq
                  order by t.seq limit (select n from per_modem)) s) as keep_from
    from chosen c
  ),
  gone as (
    delete from modem_transitions t
    using bounds b
    where t.imei = b.imei and t.seq >= b.first_seq and t.seq < b.keep_from
    returning 1
  )
  select count(*) from gone;
$$;
