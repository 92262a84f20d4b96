import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { silentLogger, type Logger } from '../log.js';
import type { IpOptions } from '../net/ip.js';
import { findLeftProxies, type LeftModem } from '../net/leftProxies.js';
import { processAlive, stopProcess } from '../net/proxyRecord.js';
import { removeRoute } from '../net/routing.js';
import { coerceError } from '../util/errors.js';
import type { EgressGate, LeftProxy } from './dataPlane.js';

export interface LeftProxiesOptions {
  runDir: string;
  /** Routing is on (not the demo's loopback addresses): left links and routes are checked and removed. */
  routing: boolean;
  ip?: IpOptions | undefined;
  /** The egress policy: left modems are admitted as the previous run had them, then released. */
  gate?: EgressGate | undefined;
  /** A left proxy not claimed by its modem's data plane within this is killed. */
  adoptWithinMs: number;
  log?: Logger | undefined;
}

interface Entry {
  modem: LeftModem;
  /** Admitted by the previous run, and still counted in our egress policy. */
  admitted: boolean;
}

/**
 * The proxies a previous run handed over (or left when it was killed), from the start-up check
 * (`findLeftProxies`) until each is adopted or killed. The Supervisor owns it: `start()` finds
 * them (what cannot be adopted is killed there); `admissions()` are the egress admissions the
 * policy starts with (the previous run's, so the proxies keep serving meanwhile); a modem's data
 * plane `claim`s its own when it comes online and adopts or replaces it; `discard` kills one whose
 * modem will not come (absent at start, or in `error`, `disabled`, ...), and so does the deadline
 * (`adoptWithinMs` after start) for every one not claimed by then. Fail closed: nothing a previous
 * run left keeps serving unsupervised past the deadline. On a handover of this run, what is not
 * claimed stays for the next; on a full stop it is killed.
 */
export class LeftProxies {
  private readonly entries = new Map<string, Entry>();
  /** Discards in progress by IMEI: a data plane waits for one before touching the routing. */
  private readonly discarding = new Map<string, Promise<void>>();
  private deadline: NodeJS.Timeout | undefined;
  private readonly log: Logger;

  constructor(private readonly options: LeftProxiesOptions) {
    this.log = (options.log ?? silentLogger).child({ component: 'handover' });
  }

  /** Finds what the previous run left; kills what cannot be adopted. Returns how many modems were kept. */
  async start(): Promise<number> {
    const { modems, killed } = await findLeftProxies(this.options.runDir, {
      checkLink: this.options.routing,
      ip: this.options.ip,
      log: this.log,
    });
    for (const modem of modems)
      this.entries.set(modem.imei, {
        modem,
        admitted: this.options.gate !== undefined && modem.uid !== undefined && modem.iface !== undefined,
      });
    if (modems.length || killed)
      this.log.info(
        { kept: modems.map((m) => m.imei), killed },
        'proxies left by the previous run: kept for their modems to adopt, the rest killed',
      );
    if (modems.length) {
      this.deadline = setTimeout(() => this.expire(), this.options.adoptWithinMs);
      this.deadline.unref();
    }
    return modems.length;
  }

  /** The previous run's egress admissions of the kept proxies (the policy starts with them). */
  admissions(): { uid: number; link: string }[] {
    return [...this.entries.values()].flatMap((e) =>
      e.admitted && e.modem.uid !== undefined && e.modem.iface !== undefined
        ? [{ uid: e.modem.uid, link: e.modem.iface }]
        : [],
    );
  }

  /** IMEIs with a proxy waiting for adoption (tests, logs). */
  get waiting(): string[] {
    return [...this.entries.keys()];
  }

  /**
   * The modem's data plane takes its left proxy (if any) to adopt or replace it; `settled` resolves
   * once a discard of it in progress is done (its routing removed), before which the data plane must
   * not touch the routing.
   */
  claim(imei: string): { proxy: LeftProxy | undefined; settled: Promise<void> } {
    const settled = this.discarding.get(imei) ?? Promise.resolve();
    const entry = this.entries.get(imei);
    if (!entry) return { proxy: undefined, settled };
    this.entries.delete(imei);
    if (this.entries.size === 0) clearTimeout(this.deadline);
    let released = false;
    const release = async (): Promise<void> => {
      if (released) return;
      released = true;
      await this.release(entry);
    };
    return {
      settled,
      proxy: {
        modem: entry.modem,
        release,
        kill: async (reason) => {
          await this.killProcesses(entry.modem, reason);
          await release();
        },
      },
    };
  }

  /** The modem will not serve soon (absent, error, disabled, ...): its left proxy is killed now. */
  discard(imei: string, reason: string): void {
    const entry = this.entries.get(imei);
    if (!entry) return;
    this.entries.delete(imei);
    if (this.entries.size === 0) clearTimeout(this.deadline);
    const done = this.putAway(entry, reason).finally(() => {
      if (this.discarding.get(imei) === done) this.discarding.delete(imei);
    });
    this.discarding.set(imei, done);
  }

  private expire(): void {
    for (const imei of [...this.entries.keys()])
      this.discard(imei, `its modem did not come online within ${this.options.adoptWithinMs} ms`);
  }

  /**
   * This run stops. A handover leaves what was not claimed for the next run (pid files, admission
   * and routing stay); a full stop kills it and takes its routing away.
   */
  async stop(mode: 'handover' | 'stop'): Promise<void> {
    clearTimeout(this.deadline);
    if (mode === 'stop')
      for (const imei of [...this.entries.keys()]) this.discard(imei, 'the supervisor stops');
    else this.entries.clear();
    await Promise.all([...this.discarding.values()]);
  }

  /** Kills an unclaimed left proxy and removes what it had: admission, routing, pid files. */
  private async putAway(entry: Entry, reason: string): Promise<void> {
    const { modem } = entry;
    try {
      await this.killProcesses(modem, reason);
      await this.release(entry);
      for (const ext of ['cfg', 'conf'])
        await rm(join(this.options.runDir, `${modem.imei}.${ext}`), { force: true });
      if (this.options.routing && modem.table !== undefined && modem.priority !== undefined)
        await removeRoute({ table: modem.table, priority: modem.priority }, this.options.ip);
    } catch (err) {
      this.log.warn(
        { err: coerceError(err), imei: modem.imei },
        "putting a previous run's proxy away failed",
      );
    }
  }

  private async killProcesses(modem: LeftModem, reason: string): Promise<void> {
    let killed = 0;
    for (const p of modem.processes) {
      if (await processAlive(p.pid, p.start)) {
        if (!(await stopProcess(p.pid, p.start)))
          this.log.warn({ pid: p.pid, imei: modem.imei }, 'a left proxy outlived SIGKILL');
        killed++;
      }
      await rm(join(this.options.runDir, `${p.name}.pid`), { force: true });
    }
    this.log.info({ imei: modem.imei, reason, killed }, 'killed the proxy the previous run left');
  }

  private async release(entry: Entry): Promise<void> {
    const { uid, iface } = entry.modem;
    if (!entry.admitted || uid === undefined || iface === undefined) return;
    entry.admitted = false;
    await this.options.gate?.release(uid, iface);
  }
}
