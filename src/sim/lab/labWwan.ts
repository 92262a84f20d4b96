import { ipJson, ip } from '../../net/ip.js';
import { applyTable, deleteTable } from '../../net/nft.js';
import type { NftTable } from '../../net/nftRuleset.js';
import { checkIface, type WwanControl } from '../../net/wwan.js';
import { silentLogger, type Logger } from '../../log.js';
import { ModemfleetError, coerceError } from '../../util/errors.js';
import type { SimModem } from '../simModem.js';
import type { NetLab } from './netLab.js';

/** Per-link faults of the lab's kernel. */
export interface LabWwanFaults {
  /** A kernel without raw_ip (before 4.5): `rawIp()` is null, `setRawIp` fails `raw_ip_unsupported`. */
  rawIpUnsupported: boolean;
  /** The write is accepted, the value stays N. */
  rawIpStuck: boolean;
}

const NO_LINK_FAULTS: LabWwanFaults = { rawIpUnsupported: false, rawIpStuck: false };

/** What the lab's modems are to this class: SimLab, SimFarm or a plain list. */
export interface LabModems {
  readonly modems: readonly SimModem[];
}

export const GATE_TABLE = 'lab_wwan';

/**
 * The lab's stand-in for the kernel's qmi_wwan (docs/ec25.md §2a), for NetLab's veth
 * links (modem i ↔ farm `wwan{i}` ↔ carrier `cr{i}`):
 * - `raw_ip` per link, `N` after every plug or re-enumeration of the simulated modem (the kernel's
 *   setting is lost with the device); a write while the farm-side link is up fails `link_busy`
 *   (qmi_wwan's EBUSY, "Cannot change a running device");
 * - `setLink` / `setMtu` are real `ip -n <farm>` calls, and the link stays as the host set it;
 * - it GATES TRAFFIC: the carrier namespace drops everything of modem i's link (an nftables table
 *   there) unless raw_ip is Y and the simulated modem's host call (`AT$QCRMCALL`) is up, as a real
 *   qmi_wwan link is UP and passes nothing without both.
 * `start()` subscribes to the modems and applies the gate (everything closed); `stop()` removes it.
 */
export class LabWwan implements WwanControl {
  private readonly raw: boolean[];
  private readonly faults: LabWwanFaults[];
  private unsubscribe: (() => void)[] = [];
  private applying: Promise<void> = Promise.resolve();
  private started = false;
  private readonly log: Logger;

  constructor(
    private readonly net: NetLab,
    private readonly lab: LabModems,
    options: { log?: Logger } = {},
  ) {
    this.raw = Array.from({ length: net.modems }, () => false);
    this.faults = Array.from({ length: net.modems }, () => ({ ...NO_LINK_FAULTS }));
    this.log = (options.log ?? silentLogger).child({ component: 'lab-wwan' });
  }

  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.lab.modems.forEach((modem, i) => {
      if (i >= this.net.modems) return;
      this.unsubscribe.push(
        modem.onEvent((event) => {
          // a new USB device (or none): the kernel's raw_ip is gone with the old one
          if (event.type === 'plugged' || event.type === 'unplugged') this.raw[i] = false;
          void this.gate().catch(() => undefined);
        }),
      );
    });
    await this.gate();
  }

  async stop(): Promise<void> {
    if (!this.started) return;
    this.started = false;
    for (const u of this.unsubscribe) u();
    this.unsubscribe = [];
    await this.applying.catch(() => undefined);
    await deleteTable('inet', GATE_TABLE, { netns: this.net.carrier });
  }

  /** Lab faults of one link (by modem index). */
  setFaults(i: number, faults: Partial<LabWwanFaults>): void {
    const f = this.faults[i];
    if (!f) throw new Error(`no lab link ${i}`);
    Object.assign(f, faults);
  }

  /** Whether modem i's link passes traffic now (raw_ip Y and the host call up). */
  passes(i: number): boolean {
    return this.raw[i] === true && this.lab.modems[i]?.hostCall === true;
  }

  rawIp(iface: string): Promise<boolean | null> {
    const i = this.net.modemOf(checkIface(iface));
    if (i === undefined || this.faults[i]?.rawIpUnsupported) return Promise.resolve(null);
    return Promise.resolve(this.raw[i] ?? false);
  }

  async setRawIp(iface: string, on: boolean): Promise<void> {
    const i = this.net.modemOf(checkIface(iface));
    if (i === undefined || this.faults[i]?.rawIpUnsupported)
      throw new ModemfleetError(
        'raw_ip_unsupported',
        `${iface} has no qmi/raw_ip (not qmi_wwan, or a kernel before 4.5)`,
      );
    if (await this.linkUp(iface))
      throw new ModemfleetError('link_busy', `${iface}: raw_ip cannot change while the link is up`);
    // stuck: the write is accepted and the value is N whatever was written
    this.raw[i] = on && !this.faults[i]?.rawIpStuck;
    await this.gate();
  }

  async setLink(iface: string, up: boolean): Promise<void> {
    await ip(['link', 'set', checkIface(iface), up ? 'up' : 'down'], { netns: this.net.farm });
  }

  async setMtu(iface: string, mtu: number): Promise<void> {
    if (!Number.isInteger(mtu) || mtu < 576 || mtu > 9000)
      throw new ModemfleetError('invalid_mtu', `MTU ${mtu} is outside 576-9000`);
    await ip(['link', 'set', checkIface(iface), 'mtu', String(mtu)], { netns: this.net.farm });
  }

  /** Resolves once the gate reflects every change so far. */
  settled(): Promise<void> {
    return this.applying.catch(() => undefined);
  }

  async linkUp(iface: string): Promise<boolean> {
    const [link] = await ipJson<{ flags?: string[] }>(['link', 'show', 'dev', checkIface(iface)], {
      netns: this.net.farm,
    });
    return link?.flags?.includes('UP') ?? false;
  }

  /** Re-applies the gate table with the state as it is when it runs (serialised, so the last wins). */
  private gate(): Promise<void> {
    const next = this.applying
      .catch(() => undefined)
      .then(async () => {
        if (!this.started) return;
        await applyTable(this.table(), { netns: this.net.carrier });
      });
    this.applying = next.catch((err: unknown) => {
      this.log.warn({ err: coerceError(err) }, 'lab wwan gate not applied');
      throw err;
    });
    return this.applying;
  }

  /** The carrier drops all traffic of every closed link, both ways. */
  table(): NftTable {
    const closed = Array.from({ length: this.net.modems }, (_, i) => i)
      .filter((i) => !this.passes(i))
      .map((i) => this.net.carrierIface(i));
    const drop = (match: 'iifname' | 'oifname') =>
      closed.length === 0
        ? []
        : [
            {
              match: [{ match, value: closed }] as const,
              then: [{ do: 'drop' }] as const,
              comment: 'closed',
            },
          ];
    return {
      family: 'inet',
      name: GATE_TABLE,
      chains: [
        {
          name: 'gate_in',
          base: { type: 'filter', hook: 'prerouting', priority: 'raw', policy: 'accept' },
          rules: drop('iifname'),
        },
        {
          name: 'gate_out',
          base: { type: 'filter', hook: 'postrouting', priority: 'filter', policy: 'accept' },
          rules: drop('oifname'),
        },
      ],
    };
  }
}
