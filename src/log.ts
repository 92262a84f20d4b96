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
  const base = { level, base: { pid: process.pid }, mixin: modemMixin };
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

const MODEM = Symbol('modemfleet.modem');
type ModemHolder = { imei?: string };

/** Adds `modem: <imei>` to every line of a modem's loggers once its IMEI is known (see modemLogger). */
function modemMixin(_merge: object, _level: number, logger: Logger): object {
  const imei = (logger as unknown as { [MODEM]?: ModemHolder })[MODEM]?.imei;
  return imei ? { modem: imei } : {};
}

/**
 * The logger of one modem: `usbPath` at once, and `modem: <imei>` on every line from the moment
 * `identify` is called, also on the lines of the children made before (its link, its AT
 * transport): pino makes a child with `Object.create(parent)`, so they all see the parent's holder.
 * Needs a root logger from createRootLogger (its mixin reads the holder).
 */
export function modemLogger(
  parent: Logger,
  usbPath: string,
): { log: Logger; identify: (imei: string) => void } {
  const log = parent.child({ usbPath });
  const holder: ModemHolder = {};
  (log as unknown as { [MODEM]: ModemHolder })[MODEM] = holder;
  return {
    log,
    identify: (imei) => {
      holder.imei = imei;
    },
  };
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = pino({ level: 'silent' });
