import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * The one root logger. JSON lines on stdout (journald); MODEMFLEET_LOG_LEVEL sets the level.
 * Components take `log.child({ component })`, actors `log.child({ modem: imei })`.
 */
export function createRootLogger(
  options: { level?: string; destination?: pino.DestinationStream } = {},
): Logger {
  const level = options.level ?? process.env['MODEMFLEET_LOG_LEVEL'] ?? 'info';
  return options.destination
    ? pino({ level, base: { pid: process.pid } }, options.destination)
    : pino({ level, base: { pid: process.pid } });
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
