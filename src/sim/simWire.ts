import { EventEmitter } from 'node:events';
import { rm, writeFile } from 'node:fs/promises';
import type { PortLike } from '../at/atTransport.js';
import { spawnChild, type Child } from '../process/run.js';
import { ModemfleetError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { sleep } from '../util/time.js';

/**
 * How a simulated modem's AT port reaches the supervisor. `pty`: a real PTY from socat, opened by
 * serialport exactly like a ttyUSB. `memory`: in-process with zero latency (benchmarks of our own
 * overhead); the path is a plain file, so presence checks work the same, and `openPort` hands the
 * supervisor the other end.
 */
export interface SimWire {
  /** The tty path appears; bytes written to the port arrive at `onInput`. */
  open(path: string, onInput: (chunk: Buffer) => void): Promise<void>;
  write(text: string): void;
  /** The tty path disappears. */
  close(): Promise<void>;
  readonly isOpen: boolean;
}

/** socat `PTY,link=PATH,raw,echo=0 STDIO`: the model drives socat's stdin/stdout. */
export class PtyWire implements SimWire {
  private child: Child | undefined;
  private writing: Promise<void> = Promise.resolve();
  private path = '';

  get isOpen(): boolean {
    return this.child !== undefined;
  }

  async open(path: string, onInput: (chunk: Buffer) => void): Promise<void> {
    this.path = path;
    await rm(path, { force: true });
    const child = spawnChild('socat', ['-d', '-d', `PTY,link=${path},raw,echo=0`, 'STDIO'], {
      stdin: 'pipe',
      stdout: 'pipe',
      cleanup: true,
    });
    this.child = child;
    child.stdout?.on('data', onInput);
    child.stdin?.on('error', () => undefined);
    void child.then(() => {
      if (this.child === child) this.child = undefined;
    });
    const deadline = Date.now() + 5_000;
    while (!(await pathExists(path))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        await this.close();
        throw new ModemfleetError('sim_pty_failed', `socat did not create ${path}`);
      }
      await sleep(10);
    }
  }

  write(text: string): void {
    const child = this.child;
    if (!child) return;
    this.writing = this.writing.then(
      () =>
        new Promise<void>((resolve) => {
          if (!child.stdin || child.stdin.destroyed) return resolve();
          child.stdin.write(Buffer.from(text, 'latin1'), () => resolve());
        }),
    );
  }

  async close(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child) return;
    child.kill('SIGTERM');
    await child;
    // socat removes its link on SIGTERM; make sure of it (a dangling link would look plugged)
    await rm(this.path, { force: true });
  }
}

/** The supervisor's end of an in-process port. */
class MemoryPort extends EventEmitter implements PortLike {
  isOpen = true;
  constructor(private readonly deliver: (chunk: Buffer) => void) {
    super();
  }
  write(data: string | Buffer, callback: (err?: Error | null) => void): void {
    if (!this.isOpen) return callback(new Error('port closed'));
    const chunk = Buffer.isBuffer(data) ? data : Buffer.from(data, 'latin1');
    queueMicrotask(() => this.deliver(chunk));
    callback(null);
  }
  close(callback: (err?: Error | null) => void): void {
    this.isOpen = false;
    queueMicrotask(() => this.emit('close'));
    callback(null);
  }
}

/** In-process ports by path: what `openPort` of the supervisor's link opens. */
const memoryWires = new Map<string, MemoryWire>();

export function openMemoryPort(path: string): Promise<PortLike> {
  const wire = memoryWires.get(path);
  if (!wire?.isOpen) return Promise.reject(new Error(`cannot open ${path}: no such in-process port`));
  return Promise.resolve(wire.connect());
}

export class MemoryWire implements SimWire {
  private path = '';
  private onInput: ((chunk: Buffer) => void) | undefined;
  private port: MemoryPort | undefined;

  get isOpen(): boolean {
    return this.onInput !== undefined;
  }

  async open(path: string, onInput: (chunk: Buffer) => void): Promise<void> {
    this.path = path;
    this.onInput = onInput;
    memoryWires.set(path, this);
    await writeFile(path, '');
  }

  connect(): MemoryPort {
    this.port?.close(() => undefined);
    const port = new MemoryPort((chunk) => this.onInput?.(chunk));
    this.port = port;
    return port;
  }

  write(text: string): void {
    const port = this.port;
    if (!port?.isOpen || !this.onInput) return;
    const chunk = Buffer.from(text, 'latin1');
    queueMicrotask(() => {
      if (port.isOpen) port.emit('data', chunk);
    });
  }

  async close(): Promise<void> {
    if (!this.onInput) return;
    this.onInput = undefined;
    if (memoryWires.get(this.path) === this) memoryWires.delete(this.path);
    await rm(this.path, { force: true });
    const port = this.port;
    this.port = undefined;
    if (port?.isOpen) {
      port.isOpen = false;
      port.emit('close');
    }
  }
}
