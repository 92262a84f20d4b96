-- Journal appends, second step (0004 made the first): the usual batch in one statement, without
-- locking the modems rows first, and no regular expression per journal row. Every statement here
-- changes the catalog only, so the migration takes milliseconds on a journal of any size
-- (BENCHMARKS.md).

-- Appends lock or update modems rows, then write modem_transitions: this migration takes the two
-- tables in the same order, or it and a concurrent append can deadlock.
lock table modems, modem_transitions in access exclusive mode;

-- A CHECK with the IMEI pattern costs a regular expression per journal row (7% of an append's
-- profile, with the ones of the modems row); the append function only stores rows of modems it
-- has a row for, whose imei is checked there.
alter table modem_transitions drop constraint modem_transitions_imei_check;

------------------------------------------------------------------------------------------------------
-- Journal append, one array per column (the server parses an array an order of magnitude faster
-- than the same rows as jsonb, and each array once). Semantics as append_transitions(jsonb): rows
-- at or below the modem's stored seq (modems.seq, the high-water mark, which retention never lowers)
-- are duplicates and skipped, so a replayed row whose journal row was already pruned is not stored
-- again; new rows are stored as far as they continue the modem's sequence; rows after a missing seq
-- are not, and gap_at names the seq the modem waits for. The modems row takes the state of the last
-- stored transition. (Listeners get the stored rows from the statement trigger of 0004.)
------------------------------------------------------------------------------------------------------
create or replace function append_transition_arrays(
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
  wanted integer;
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

  -- The usual batch: every modem exists and its rows are distinct seqs that continue its stored seq
  -- without a gap. Then all rows are stored as they are, in one statement: no locks taken first, no
  -- sorting, de-duplication or run detection. The mirror update only takes a modem whose seq is
  -- still the one checked; if another writer got there first (the update skips its row, or a row
  -- exists already: unique violation), this is undone and the general path below does it all again.
  begin
    with runs as (
      select p.imei, min(p.seq) as first_seq, max(p.seq) as last_seq, count(*)::integer as k,
             max(p.copies) as copies
      from (select b.imei, b.seq, count(*) as copies
            from unnest(imeis, seqs) as b(imei, seq) group by b.imei, b.seq) p
      group by p.imei
    ),
    checked as (
      select bool_and(m.imei is not null and r.first_seq = m.seq + 1
                      and r.last_seq - r.first_seq + 1 = r.k and r.copies = 1) as ok,
             count(*)::integer as modems,
             array_agg(r.imei) as run_imeis, array_agg(r.k) as run_counts,
             array_agg(r.last_seq) as run_lasts
      from runs r left join modems m on m.imei = r.imei
    ),
    batch_rows as (
      select b.*
      from unnest(imeis, seqs, from_states, to_states, events, details, ats, host_ids, reasons, wan_ips)
        as b(imei, seq, from_state, to_state, event, detail, at, host_id, reason, wan_ip)
      where (select c.ok from checked c)
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
      from runs r
      join batch_rows l on l.imei = r.imei and l.seq = r.last_seq
      where m.imei = r.imei and m.seq = r.first_seq - 1
      returning 1
    )
    select c.ok, c.modems, (select count(*)::integer from updated), c.run_imeis, c.run_counts,
           c.run_lasts
    into simple, wanted, locked, run_imeis, run_counts, run_lasts
    from checked c;
    if simple and locked <> wanted then
      raise exception 'journal: another writer changed a modem of this batch' using errcode = 'MF001';
    end if;
  exception when unique_violation or sqlstate 'MF001' then
    simple := false;
  end;
  if simple then
    return query select r.imei, r.k, r.last_seq, null::bigint
      from unnest(run_imeis, run_counts, run_lasts) as r(imei, k, last_seq);
    return;
  end if;

  -- one writer per modem at a time: the batch's modems rows are locked in one order; modems seen
  -- for the first time get a row first (semi-joins with unnest, never "= any(array)", which compares
  -- every row with every element)
  select (select count(distinct x) from unnest(imeis) x), count(*) into wanted, locked
  from (select 1 from modems m where m.imei in (select x from unnest(imeis) x)
        order by m.imei for update) l;
  if locked < wanted then
    insert into modems as m (imei, host_id)
    select b.imei, min(b.host_id) from unnest(imeis, host_ids) as b(imei, host_id)
    group by b.imei order by b.imei
    on conflict on constraint modems_pkey do nothing;
    perform 1 from modems m where m.imei in (select x from unnest(imeis) x) order by m.imei for update;
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
    insert into modem_transitions as t (imei, seq, from_state, to_state, event, detail, at, host_id)
    select o.imei, o.seq, o.from_state, o.to_state, o.event, coalesce(o.detail, '{}'), o.at, o.host_id
    from ok_rows o
    on conflict on constraint modem_transitions_pkey do nothing
    returning t.imei
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
  from (select distinct x as imei from unnest(imeis) x) u
  join modems m on m.imei = u.imei
  left join fresh_counts fc on fc.imei = m.imei
  left join inserted_counts ic on ic.imei = m.imei;
end;
$$;
