import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config.js';

/**
 * Progress on a terminal: `demo` and `run` say what they are waiting for (the embedded PostgreSQL's
 * first start takes seconds, modems take seconds to come up) when stderr is a terminal, one plain
 * line per step. Anything else (journald, a pipe, a file, the tests) gets nothing from it: logs
 * stay plain JSON lines. MODEMFLEET_PROGRESS=0 turns it off on a terminal too.
 */
export type Progress = (line: string) => void;

export function terminalProgress(
  stream: { isTTY?: boolean; write(text: string): unknown } = process.stderr,
  env: NodeJS.ProcessEnv = process.env,
): Progress {
  if (stream.isTTY !== true || env['MODEMFLEET_PROGRESS'] === '0') return () => undefined;
  let last = '';
  return (line) => {
    if (line === last) return; // a poll that found nothing new says nothing
    last = line;
    stream.write(`modemfleet: ${line}\n`);
  };
}

/** `3 of 4 modems online (1 error)`: where the modems are, from counts by top-level state. */
export function modemsLine(byState: Readonly<Record<string, number>>): string {
  const total = Object.values(byState).reduce((a, b) => a + b, 0);
  const online = byState['online'] ?? 0;
  const others = Object.entries(byState)
    .filter(([state, n]) => state !== 'online' && n > 0)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([state, n]) => `${n} ${state}`);
  return `${online} of ${total} modem${total === 1 ? '' : 's'} online${others.length ? ` (${others.join(', ')})` : ''}`;
}

/** What opening the database will take: the embedded server's first start initialises a cluster. */
export function databaseStep(config: Pick<Config, 'databaseUrl' | 'stateDir'>): string {
  if (config.databaseUrl) return 'connecting to PostgreSQL (DATABASE_URL)';
  return existsSync(join(config.stateDir, 'postgres', 'data', 'PG_VERSION'))
    ? 'starting the embedded PostgreSQL'
    : `initialising the embedded PostgreSQL in ${join(config.stateDir, 'postgres')} (the first start takes a few seconds)`;
}
