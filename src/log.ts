import { isatty } from 'node:tty';
import { pino, type Logger } from 'pino';
import { PinoPretty } from 'pino-pretty';

export type { Logger };

/**
 * The one root logger. JSON lines (journald) on stdout, or on `fd`; readable coloured lines when
 * that descriptor is a terminal. MODEMFLEET_LOG_LEVEL sets the level.
 * Components take `log.child({ component })`, actors `log.child({ modem: imei })`.
 */
export function createRootLogger(
  options: { level?: string; destination?: pino.DestinationStream; fd?: 1 | 2 } = {},
): Logger {
  const level = options.level ?? process.env['MODEMFLEET_LOG_LEVEL'] ?? 'info';
  const base = { level, base: { pid: process.pid } };
  if (options.destination) return pino(base, options.destination);
  const fd = options.fd ?? 1;
  if (isatty(fd))
    return pino(
      base,
      PinoPretty({
        destination: fd,
        colorize: true,
        sync: true,
        translateTime: 'SYS:HH:MM:ss.l',
        ignore: 'pid',
      }),
    );
  return pino(base, pino.destination({ fd, sync: true }));
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
