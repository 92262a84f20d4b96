import { SerialPort } from 'serialport';
import { silentLogger, type Logger } from '../log.js';
import { coerceError } from '../util/errors.js';
import { watchPresence } from '../util/presence.js';
import { AtSession, type AtSessionOptions } from './atSession.js';
import { AtError, type AtChannel, type AtResponse, type SendOptions, type Urc } from './types.js';

/** What the transport needs of a serial port (serialport's SerialPort, or an in-process port). */
export interface PortLike {
  readonly isOpen: boolean;
  write(data: string | Buffer, callback: (err?: Error | null) => void): unknown;
  close(callback: (err?: Error | null) => void): void;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  on(event: 'close', listener: () => void): unknown;
  removeAllListeners(event: 'data'): unknown;
}

/** Opens a real tty with serialport. */
export function openSerialPort(path: string, baudRate = 115_200): Promise<PortLike> {
  const port = new SerialPort({ path, baudRate, autoOpen: false });
  return new Promise<PortLike>((resolve, reject) =>
    port.open((err) =>
      err
        ? reject(new AtError('port_lost', '', `cannot open ${path}: ${err.message}`, { cause: err }))
        : resolve(port),
    ),
  );
}

export interface AtTransportOptions extends Omit<
  AtSessionOptions,
  'write' | 'onUrc' | 'onClose' | 'onOverflow'
> {
  path: string;
  baudRate?: number;
  log?: Logger;
  onUrc?: (urc: Urc) => void;
  onClose?: (reason: AtError) => void;
  /** How often the device path is checked for removal. */
  presencePollMs?: number;
  /** How long port.close() may take before we stop waiting for it. */
  closeTimeoutMs?: number;
  /** Opens the port (default: serialport); the in-process simulator provides its own. */
  openPort?: (path: string) => Promise<PortLike>;
}

/**
 * The AT port over serialport. Loss is detected without relying on serialport's 'close' event (the
 * native binding can spin at 100% CPU without ever emitting it when a PTY peer goes away during a
 * read): the device path is polled, write errors and 'error' events count, and N consecutive
 * timeouts mean the port is lost. Then the port is closed by us and every command settled.
 */
export class AtTransport implements AtChannel {
  private port: PortLike | undefined;
  private session: AtSession | undefined;
  private unwatch: (() => void) | undefined;
  private closing: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly closeWaiters: ((reason: AtError) => void)[] = [];

  constructor(private readonly options: AtTransportOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'at', port: options.path });
  }

  get closed(): boolean {
    return this.session?.closed ?? true;
  }

  /** Resolves with the reason once the transport has closed. */
  whenClosed(): Promise<AtError> {
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  async start(): Promise<void> {
    const port = await (this.options.openPort
      ? this.options.openPort(this.options.path).catch((err: unknown) => {
          throw new AtError(
            'port_lost',
            '',
            `cannot open ${this.options.path}: ${coerceError(err).message}`,
            {
              cause: err,
            },
          );
        })
      : openSerialPort(this.options.path, this.options.baudRate));
    this.port = port;
    const session = new AtSession({
      ...this.options,
      write: (data) =>
        new Promise<void>((resolve, reject) => {
          port.write(data, (err) => (err ? reject(err) : resolve()));
        }),
      onUrc: (urc) => this.options.onUrc?.(urc),
      onOverflow: (bytes) => this.log.warn({ bytes }, 'over-long line from the modem discarded'),
      onClose: (reason) => this.onSessionClosed(reason),
    });
    this.session = session;
    port.on('data', (chunk: Buffer) => session.feed(chunk));
    port.on('error', (err: Error) =>
      session.close(new AtError('port_lost', '', `port error: ${err.message}`, { cause: err })),
    );
    port.on('close', () => session.close(new AtError('port_lost', '', 'the port closed')));
    this.unwatch = watchPresence(this.options.path, this.options.presencePollMs ?? 500, (exists) => {
      if (!exists) session.close(new AtError('port_lost', '', `${this.options.path} disappeared`));
    });
  }

  send(command: string, options?: SendOptions): Promise<AtResponse> {
    if (!this.session) return Promise.reject(new AtError('port_lost', command, 'the AT port is not open'));
    return this.session.send(command, options);
  }

  /** Close the port and settle everything. Idempotent. */
  async stop(): Promise<void> {
    this.session?.close(new AtError('port_lost', '', 'the AT port was closed by the supervisor'));
    await this.closing;
  }

  private onSessionClosed(reason: AtError): void {
    this.unwatch?.();
    this.unwatch = undefined;
    this.log.info({ reason: reason.message }, 'AT port closed');
    const port = this.port;
    this.port = undefined;
    this.closing = new Promise<void>((resolve) => {
      if (!port?.isOpen) {
        resolve();
        return;
      }
      const timer = setTimeout(() => {
        this.log.warn('port.close() did not complete; abandoning the handle');
        resolve();
      }, this.options.closeTimeoutMs ?? 1_000);
      port.removeAllListeners('data');
      port.close((err) => {
        if (err) this.log.debug({ err: coerceError(err) }, 'port.close() failed');
        clearTimeout(timer);
        resolve();
      });
    });
    for (const waiter of this.closeWaiters.splice(0)) waiter(reason);
    this.options.onClose?.(reason);
  }
}
