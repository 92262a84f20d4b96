import type { ModemRecord } from '../store/reconcile.js';

/**
 * What the fleet knows of each IMEI across the `Modem` objects that come and go (a replug or a
 * re-enumeration makes a new one): its journal position (the last seq handed out, so numbering
 * stays contiguous across them), what the database remembered at start (desired state, last USB
 * path), the IMEI last identified at each USB path, and the `Modem` serving each IMEI now.
 * Only Modems and the Supervisor's start-up reconciliation write it, through these methods.
 */
export class ModemDirectory<M = unknown> {
  private readonly seqs = new Map<string, number>();
  private readonly records = new Map<string, ModemRecord>();
  private readonly lastAt = new Map<string, string>();
  private readonly running = new Map<string, M>();

  /** The modems this host had, from the database (after the spool replay, so seqs are current). */
  load(records: readonly ModemRecord[]): void {
    for (const record of records) {
      this.records.set(record.imei, record);
      this.settle(record.imei, record.seq);
    }
  }

  get remembered(): readonly ModemRecord[] {
    return [...this.records.values()];
  }

  /** The record of whatever modem was last at a USB path, by the database at start. */
  rememberedAt(usbPath: string): ModemRecord | undefined {
    for (const record of this.records.values()) if (record.usbPath === usbPath) return record;
    return undefined;
  }

  desired(imei: string): 'enabled' | 'disabled' | undefined {
    return this.records.get(imei)?.desired;
  }

  /** The journal position of this IMEI is known here (loaded, or numbered by this process). */
  knows(imei: string): boolean {
    return this.seqs.has(imei);
  }

  /** Raises the journal position to at least `seq` (the database's, when it is read). */
  settle(imei: string, seq: number): void {
    this.seqs.set(imei, Math.max(seq, this.seqs.get(imei) ?? 0));
  }

  nextSeq(imei: string): number {
    const next = (this.seqs.get(imei) ?? 0) + 1;
    this.seqs.set(imei, next);
    return next;
  }

  /** The IMEI a new Modem at this USB path journals under until AT confirms it (or undefined). */
  presumedAt(usbPath: string): string | undefined {
    const imei = this.lastAt.get(usbPath) ?? this.rememberedAt(usbPath)?.imei;
    return imei && this.knows(imei) && !this.running.has(imei) ? imei : undefined;
  }

  /** `imei` was identified at `usbPath` (the next Modem there presumes it). */
  placed(imei: string, usbPath: string): void {
    this.lastAt.set(usbPath, imei);
  }

  /** `modem` serves `imei`; returns the other Modem that claimed it, if any. */
  claim(imei: string, modem: M): M | undefined {
    const other = this.running.get(imei);
    this.running.set(imei, modem);
    return other !== undefined && other !== modem ? other : undefined;
  }

  release(imei: string, modem: M): void {
    if (this.running.get(imei) === modem) this.running.delete(imei);
  }

  serving(imei: string): M | undefined {
    return this.running.get(imei);
  }

  /** Every Modem serving an IMEI now. */
  allServing(): IterableIterator<M> {
    return this.running.values();
  }
}
