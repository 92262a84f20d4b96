-- Issue 19 item 1: bytes through each modem's ports, counted by the kernel (payload, the
-- customer's side: src/net/trafficTable.ts), sampled per minute by the owning host and stored
-- here per minute, hour and day (each sample is added to all three: the rollups are exact and
-- need no job), with retention per table (prune_traffic).
--
-- No double counting. A host sends the cumulative values of its kernel counters, with the
-- counters' instance (a token made when they were created) and the reading's time. The cursor per
-- (modem, host) holds the last values stored: a sample adds the growth since, or its whole values
-- when the instance is new or a counter went down (created again, or reset: counted from zero).
-- A sample no later than the cursor's is one already stored (a spool replayed twice, a send that
-- timed out but committed) and is skipped. Samples of one modem arrive in order (one writer per
-- host, spooled in order while the database is away).

create table traffic_cursors (
  imei     text not null check (imei ~ '^[0-9]{15}$'),
  host_id  text not null check (length(host_id) between 1 and 63),
  instance text not null check (instance ~ '^[0-9a-f]{8,32}$'),
  download bigint not null check (download >= 0),
  upload   bigint not null check (upload >= 0),
  at       timestamptz not null,
  primary key (imei, host_id)
);

create table traffic_minute (
  imei     text not null check (imei ~ '^[0-9]{15}$'),
  at       timestamptz not null,
  download bigint not null default 0 check (download >= 0),
  upload   bigint not null default 0 check (upload >= 0),
  primary key (imei, at)
);
create table traffic_hour (like traffic_minute including all);
create table traffic_day (like traffic_minute including all);
create index traffic_minute_at_idx on traffic_minute (at);
create index traffic_hour_at_idx on traffic_hour (at);
create index traffic_day_at_idx on traffic_day (at);

-- One batch of samples, in order; returns how many were new (not already stored).
create function record_traffic(
  imeis text[], hosts text[], ats timestamptz[], minutes timestamptz[], instances text[],
  downloads bigint[], uploads bigint[])
returns integer
language plpgsql as $$
declare
  n integer := coalesce(cardinality(imeis), 0);
  r record;
  c traffic_cursors;
  q modem_quotas;
  dd bigint;
  du bigint;
  ps timestamptz;
  applied integer := 0;
begin
  if coalesce(cardinality(hosts), 0) <> n or coalesce(cardinality(ats), 0) <> n
     or coalesce(cardinality(minutes), 0) <> n or coalesce(cardinality(instances), 0) <> n
     or coalesce(cardinality(downloads), 0) <> n or coalesce(cardinality(uploads), 0) <> n then
    raise exception 'record_traffic: arrays of different lengths' using errcode = '22023';
  end if;
  for r in
    select b.* from unnest(imeis, hosts, ats, minutes, instances, downloads, uploads)
      with ordinality as b(imei, host_id, at, minute, instance, download, upload, i)
    order by b.i
  loop
    select * into c from traffic_cursors t where t.imei = r.imei and t.host_id = r.host_id for update;
    if found and r.at <= c.at then
      continue; -- stored before
    end if;
    if found and c.instance = r.instance and r.download >= c.download and r.upload >= c.upload then
      dd := r.download - c.download;
      du := r.upload - c.upload;
    else
      dd := r.download;
      du := r.upload;
    end if;
    insert into traffic_cursors (imei, host_id, instance, download, upload, at)
    values (r.imei, r.host_id, r.instance, r.download, r.upload, r.at)
    on conflict (imei, host_id) do update
      set instance = excluded.instance, download = excluded.download, upload = excluded.upload, at = excluded.at;
    applied := applied + 1;
    continue when dd = 0 and du = 0;
    insert into traffic_minute as t (imei, at, download, upload)
    values (r.imei, date_trunc('minute', r.minute, 'UTC'), dd, du)
    on conflict (imei, at) do update set download = t.download + excluded.download, upload = t.upload + excluded.upload;
    insert into traffic_hour as t (imei, at, download, upload)
    values (r.imei, date_trunc('hour', r.minute, 'UTC'), dd, du)
    on conflict (imei, at) do update set download = t.download + excluded.download, upload = t.upload + excluded.upload;
    insert into traffic_day as t (imei, at, download, upload)
    values (r.imei, date_trunc('day', r.minute, 'UTC'), dd, du)
    on conflict (imei, at) do update set download = t.download + excluded.download, upload = t.upload + excluded.upload;
    -- the quota's period: this sample's minute in a later period starts it, with this sample
    select * into q from modem_quotas m where m.imei = r.imei and m.bytes is not null for update;
    if found then
      ps := traffic_period_start(q.period, q.month_start_day, r.minute, q.period_start);
      if ps > q.period_start then
        update modem_quotas set period_start = ps, used = dd + du, alert_level = 0,
          closed_at = case when closed_reason = 'quota_exceeded' then null else closed_at end,
          closed_reason = case when closed_reason = 'quota_exceeded' then null else closed_reason end
        where imei = r.imei;
      elsif r.at > q.period_start then
        update modem_quotas set used = used + dd + du where imei = r.imei;
      end if;
    end if;
  end loop;
  return applied;
end;
$$;

-- Retention: rows older than each table's limit, at most max_rows per table per call.
create function prune_traffic(minute_before timestamptz, hour_before timestamptz, day_before timestamptz,
                              max_rows integer)
returns bigint
language plpgsql as $$
declare
  total bigint := 0;
  n bigint;
begin
  delete from traffic_minute where ctid in (select ctid from traffic_minute where at < minute_before limit max_rows);
  get diagnostics n = row_count;
  total := total + n;
  delete from traffic_hour where ctid in (select ctid from traffic_hour where at < hour_before limit max_rows);
  get diagnostics n = row_count;
  total := total + n;
  delete from traffic_day where ctid in (select ctid from traffic_day where at < day_before limit max_rows);
  get diagnostics n = row_count;
  return total + n;
end;
$$;
