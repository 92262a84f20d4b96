/**
 * The ranges a host's allocations come from (HTTP and SOCKS ports, routing tables, interface ids):
 * configured in config.ts, allocated under unique constraints by src/store/allocations.ts.
 */
export interface Range {
  from: number;
  to: number;
}

/** Where allocations come from; slot n takes `from + n` of every range. */
export interface AllocationRanges {
  httpPort: Range;
  socksPort: Range;
  routingTable: Range;
  ifaceId: Range;
}

export const DEFAULT_RANGES: AllocationRanges = {
  httpPort: { from: 21000, to: 21999 },
  socksPort: { from: 31000, to: 31999 },
  // the kernel reserves tables 253-255 (default, main, local): stay far above them
  routingTable: { from: 10000, to: 19999 },
  ifaceId: { from: 0, to: 9999 },
};

/** How many slots (modems) a host's ranges hold: slot n takes `from + n` of every range. */
export const slotCount = (r: AllocationRanges): number =>
  Math.min(...Object.values(r).map((x: { from: number; to: number }) => x.to - x.from + 1));

/** Problems with a set of ranges, as `path: message` lines (empty when fine). */
export function checkRanges(r: AllocationRanges, path = 'allocation'): string[] {
  const problems: string[] = [];
  for (const [name, range] of Object.entries(r) as [keyof AllocationRanges, { from: number; to: number }][]) {
    if (!Number.isInteger(range.from) || !Number.isInteger(range.to) || range.from > range.to) {
      problems.push(`${path}.${name}: from and to must be integers with from <= to`);
    }
  }
  for (const name of ['httpPort', 'socksPort'] as const) {
    if (r[name].from < 1024 || r[name].to > 65535)
      problems.push(`${path}.${name}: ports must be within 1024-65535`);
  }
  if (r.httpPort.from <= r.socksPort.to && r.socksPort.from <= r.httpPort.to) {
    problems.push(`${path}: httpPort and socksPort ranges overlap`);
  }
  const t = r.routingTable;
  if (t.from < 1 || (t.from <= 255 && t.to >= 253) || t.to > 2_147_483_647) {
    problems.push(
      `${path}.routingTable: must avoid 0 and the kernel's tables 253-255 (default ${DEFAULT_RANGES.routingTable.from}-${DEFAULT_RANGES.routingTable.to})`,
    );
  }
  if (r.ifaceId.from < 0) problems.push(`${path}.ifaceId: must be >= 0`);
  return problems;
}
