import type { Sql } from '../src/store/database.js';
import { appendTransitions } from '../src/store/journal.js';
import type { TransitionRecord } from '../src/store/types.js';

/**
 * Journal throughput: transitions persisted per second for N modems by our journal (group commit
 * through append_transition_arrays: journal rows + modems rows + NOTIFY per batch), against (a) the
 * limit, a raw multi-row INSERT of the same rows into a bare table, and (b) the seed's pattern: one
 * UPDATE per transition on a modems table whose per-row trigger writes a row_to_json audit row and
 * pg_notify. The three take turns round by round.
 */
export interface JournalFigures {
  modems: number;
  rows: number;
  oursPerSec: number;
  rawPerSec: number;
  seedPerSec: number;
  vsRaw: number;
  vsSeed: number;
}

const STATES = ['initializing.sim', 'initializing.registering', 'online.serving', 'online.rotating'];

function rounds(modems: number, perModem: number): TransitionRecord[][] {
  const base = 352000000000000;
  return Array.from({ length: perModem }, (_, r) =>
    Array.from({ length: modems }, (_, m) => ({
      imei: String(base + m),
      seq: r + 1,
      from: r === 0 ? null : (STATES[(r - 1) % STATES.length] ?? null),
      to: STATES[r % STATES.length] ?? 'online',
      event: 'bench',
      at: new Date(),
      host: 'bench',
    })),
  );
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export async function journalThroughput(sql: Sql, modems: number, perModem: number): Promise<JournalFigures> {
  const batches = rounds(modems, perModem);
  const rows = modems * perModem;
  await sql`insert into hosts (id, name) values ('bench', 'bench') on conflict do nothing`;

  // (a) raw: the same rows, multi-row INSERT, no function, no trigger, no modems row
  await sql`create table raw_transitions (like modem_transitions including defaults including constraints)`;
  await sql`alter table raw_transitions add primary key (imei, seq)`;
  const raw = async (batch: TransitionRecord[]): Promise<void> => {
    const payload = batch.map((t) => ({
      imei: t.imei,
      seq: t.seq,
      from_state: t.from,
      to_state: t.to,
      event: t.event,
      at: t.at.toISOString(),
      host_id: t.host,
    }));
    await sql`insert into raw_transitions (imei, seq, from_state, to_state, event, at, host_id)
      select imei, seq, from_state, to_state, event, at, host_id
      from jsonb_to_recordset(${sql.json(payload)}::jsonb)
        as x(imei text, seq bigint, from_state text, to_state text, event text, at timestamptz, host_id text)`;
  };

  // (b) the seed's pattern
  await sql.unsafe(`
    create table seed_modems (serial varchar(50) primary key, status varchar(64), wan_ip inet, signal_strength int,
      operator varchar(100), proxy_port int, updated_at timestamp default now(), event_sequence bigserial,
      metadata jsonb default '{}');
    create table seed_events (id bigserial primary key, modem_serial varchar(50) references seed_modems(serial),
      event_type varchar(50), old_data jsonb, new_data jsonb, created_at timestamp default now());
    create index on seed_events (created_at);
    create index on seed_events (event_type, modem_serial);
    create function seed_notify() returns trigger language plpgsql as $$
    begin
      if old.status is distinct from new.status then
        insert into seed_events (modem_serial, event_type, old_data, new_data)
        values (new.serial, 'UPDATE', row_to_json(old)::jsonb, row_to_json(new)::jsonb);
        perform pg_notify('seed_status_change', jsonb_build_object('operation', 'UPDATE', 'serial', new.serial,
          'old_status', old.status, 'new_status', new.status, 'sequence', new.event_sequence)::text);
      end if;
      return new;
    end $$;
    create trigger seed_trigger after update on seed_modems for each row execute function seed_notify();`);
  await sql`insert into seed_modems (serial, status) select (352000000000000 + g)::text, 'detecting' from generate_series(0, ${modems - 1}::int) g`;
  // one UPDATE per transition, pipelined in one transaction per round (generous to the seed)
  const seed = async (batch: TransitionRecord[]): Promise<void> => {
    await sql.begin((tx) =>
      batch.map((t) => tx`update seed_modems set status = ${t.to} where serial = ${t.imei}`),
    );
  };

  // (c) ours: the production path
  const ours = async (batch: TransitionRecord[]): Promise<void> => {
    await appendTransitions(sql, batch);
  };

  // Round by round, the three take turns (in a rotating order), so that all of them run under the
  // same load of a shared machine; each one's time is the sum of its rounds.
  const methods = [raw, seed, ours];
  const spent = [0, 0, 0];
  for (const [r, batch] of batches.entries()) {
    for (let k = 0; k < methods.length; k++) {
      const i = (r + k) % methods.length;
      spent[i] = (spent[i] ?? 0) + (await timed(() => (methods[i] ?? ours)(batch)));
    }
  }
  const [rawSeconds = 0, seedSeconds = 0, ourSeconds = 0] = spent;
  const [count] = await sql<
    { n: number }[]
  >`select count(*)::int as n from modem_transitions where host_id = 'bench'`;
  if (count?.n !== rows) throw new Error(`journal stored ${count?.n} rows, expected ${rows}`);

  return {
    modems,
    rows,
    oursPerSec: Math.round(rows / ourSeconds),
    rawPerSec: Math.round(rows / rawSeconds),
    seedPerSec: Math.round(rows / seedSeconds),
    vsRaw: Number((rawSeconds / ourSeconds).toFixed(2)),
    vsSeed: Number((seedSeconds / ourSeconds).toFixed(2)),
  };
}
