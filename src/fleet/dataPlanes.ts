import type { AlertInfo } from '../../machines/modemTypes.js';
import type { Logger } from '../log.js';
import { getViaSocks5 } from '../net/proxyClient.js';
import type { Allocation } from '../store/types.js';
import { sleep } from '../util/time.js';
import type { CommandOutcome } from './commandProcessor.js';
import { ModemDataPlane, type DataPlaneOptions } from './dataPlane.js';
import type { ModemSlot } from './modemSlot.js';

export interface EgressOptions {
  /** An echo server's URL (http://IPV4[:PORT]/) that answers with the client's address. */
  url: string;
  intervalMs: number;
  /** How a port is reached (default: a SOCKS5 request from here; in a namespace, from inside it). */
  probe?: (
    port: { socksPort: number; user: string; password: string },
    url: string,
  ) => Promise<string | null>;
}

export type FleetDataPlaneOptions = DataPlaneOptions & { egress?: EgressOptions | undefined };

export interface DataPlanesDeps {
  log: Logger;
  alert: (alert: AlertInfo, imei: string) => void;
  /** The slot is still the running one at its USB path (and the supervisor not stopping). */
  current: (slot: ModemSlot) => boolean;
  /** A teardown the supervisor waits for on stop. */
  track: (done: Promise<void>) => void;
}

/**
 * The data planes of the fleet: one `ModemDataPlane` per online modem, kept in step with the
 * modem's state and address, and the egress guard over them. Through the modem's own SOCKS port,
 * the echo server must see the modem's address: another address means the port leaks, so it stops
 * serving (the modem goes to `error`, `egress_mismatch`); no answer re-applies the routing.
 */
export class DataPlanes {
  /** Proxy processes that exited or failed to start (each one is restarted, within limits). */
  readonly stats = { proxyRestarts: 0 };

  constructor(
    private readonly options: FleetDataPlaneOptions,
    private readonly deps: DataPlanesDeps,
  ) {}

  /** Online with an address, ports and a link: the data plane runs; otherwise it does not. */
  sync(slot: ModemSlot, allocation: Allocation | undefined): void {
    const snapshot = slot.runtime.snapshot();
    const online = snapshot.status === 'active' && snapshot.matches('online');
    const wanIp = snapshot.context.wanIp;
    const link = slot.iface ?? (this.options.routing === false ? 'lo' : undefined);
    if (online && wanIp && allocation && link && this.deps.current(slot)) {
      if (slot.dataPlane) return slot.dataPlane.changeAddress(wanIp);
      const imei = allocation.imei;
      slot.dataPlane = new ModemDataPlane(
        this.options,
        imei,
        link,
        allocation,
        wanIp,
        {
          onProxyFailed: (detail) => {
            this.deps.alert(
              { kind: 'proxy_failed', severity: 'critical', message: `proxy of ${imei}: ${detail}` },
              imei,
            );
            slot.runtime.send({ type: 'dataplane.failed', reason: 'proxy_failed', detail });
          },
          onProxyRestart: () => {
            this.stats.proxyRestarts++;
          },
          onRoutingProblem: (detail) => {
            if (detail) this.deps.log.warn({ imei, problem: detail }, 'routing not as applied; retrying');
          },
        },
        this.deps.log.child({ modem: imei }),
      );
      slot.dataPlane.start();
      this.scheduleEgressCheck(slot);
      return;
    }
    if (!online && slot.dataPlane) this.stop(slot);
  }

  /** Tears the slot's data plane down (proxy, then routing); the supervisor waits for it on stop. */
  stop(slot: ModemSlot): void {
    const dataPlane = slot.dataPlane;
    slot.dataPlane = undefined;
    clearTimeout(slot.egressTimer);
    if (!dataPlane) return;
    this.deps.track(
      dataPlane.stop().catch((err: unknown) => this.deps.log.warn({ err }, 'stopping a data plane failed')),
    );
  }

  private scheduleEgressCheck(slot: ModemSlot): void {
    const egress = this.options.egress;
    if (!egress) return;
    slot.egressTimer = setTimeout(() => void this.checkEgress(slot), egress.intervalMs);
    slot.egressTimer.unref();
  }

  private async checkEgress(slot: ModemSlot): Promise<void> {
    const dataPlane = slot.dataPlane;
    const wanIp = slot.runtime.snapshot().context.wanIp;
    if (!dataPlane || !wanIp || !this.deps.current(slot)) return;
    const endpoint = dataPlane.endpoint;
    const seen = await this.probe(endpoint);
    if (slot.dataPlane !== dataPlane || slot.runtime.snapshot().context.wanIp !== wanIp)
      return this.scheduleEgressCheck(slot);
    const imei = dataPlane.imei;
    if (seen === null) {
      this.deps.alert(
        {
          kind: 'egress_check_failed',
          severity: 'warning',
          message: `no answer through the ports of ${imei}; routing re-applied`,
        },
        imei,
      );
      dataPlane.reapplyRouting();
    } else if (seen !== wanIp) {
      const detail = `port ${endpoint.socksPort} egressed from ${seen.slice(0, 64)}, not ${wanIp}`;
      this.deps.alert(
        { kind: 'egress_mismatch', severity: 'critical', message: `modem ${imei}: ${detail}` },
        imei,
      );
      slot.runtime.send({ type: 'dataplane.failed', reason: 'egress_mismatch', detail });
      return;
    }
    this.scheduleEgressCheck(slot);
  }

  /**
   * A rotation is done only when a request through the modem's own port shows the new address
   * (with the egress guard configured): the routing and proxy follow the address first.
   */
  async verifyRotation(slot: ModemSlot, outcome: CommandOutcome): Promise<CommandOutcome> {
    const wanIp = outcome.result['wanIp'];
    if (!this.options.egress || typeof wanIp !== 'string') return outcome;
    const deadline = Date.now() + 15_000;
    let seen: string | null = null;
    while (Date.now() < deadline && this.deps.current(slot)) {
      const dataPlane = slot.dataPlane;
      if (dataPlane) {
        seen = await this.probe(dataPlane.endpoint);
        if (seen === wanIp) return { ok: true, result: { ...outcome.result, verifiedThroughPort: true } };
      }
      await sleep(250);
    }
    return { ok: false, result: { ...outcome.result, error: 'egress_not_verified', seen } };
  }

  /** What the echo server sees through the port; null when the request fails. */
  private probe(endpoint: ModemDataPlane['endpoint']): Promise<string | null> {
    const egress = this.options.egress;
    if (!egress) return Promise.resolve(null);
    if (egress.probe) return egress.probe(endpoint, egress.url);
    return getViaSocks5(
      { host: '127.0.0.1', port: endpoint.socksPort, user: endpoint.user, password: endpoint.password },
      egress.url,
    ).then(
      (a) => (a.status === 200 ? a.body.trim() : null),
      () => null,
    );
  }
}
