import { isIPv4 } from 'node:net';
import { ipJson, type IpOptions } from './ip.js';

/**
 * The address a modem reports (`+CGPADDR`, `+CGCONTRDP`) is input from a device: before it reaches
 * `ip addr`/`ip rule from ADDR` it must be an address a carrier could have given. A modem (or
 * whoever controls its firmware or serial line) that answers 127.0.0.1, the host's management
 * address or another modem's address would otherwise steer traffic of the host or of another
 * customer into its table. Refused: not IPv4, unspecified, broadcast, multicast, reserved (240/4),
 * loopback (unless `allowLoopback`: the demo's modems are 127.0.x.y), link-local, an address of
 * the host on another interface, another modem's address.
 */
export function addressProblem(
  address: string,
  context: { allowLoopback: boolean; otherModems: ReadonlySet<string>; hostAddresses: ReadonlySet<string> },
): string | null {
  if (!isIPv4(address)) return 'not an IPv4 address';
  const [a = 0, b = 0] = address.split('.').map(Number);
  if (address === '0.0.0.0' || a === 0) return 'an unspecified address (0.0.0.0/8)';
  if (address === '255.255.255.255') return 'the broadcast address';
  if (a >= 224 && a <= 239) return 'a multicast address';
  if (a >= 240) return 'a reserved address (240.0.0.0/4)';
  if (a === 127 && !context.allowLoopback) return 'a loopback address';
  if (a === 169 && b === 254) return 'a link-local address';
  if (context.otherModems.has(address)) return "another modem's address";
  if (context.hostAddresses.has(address)) return 'an address of this host';
  return null;
}

/**
 * IPv4 addresses of the host (in `netns` when set) on any interface but `except` (the modem's own
 * link carries the modem's address: we put it there). Read from `ip -json -4 addr show`.
 */
export async function hostAddresses(
  options: IpOptions & { except?: string | undefined },
): Promise<Set<string>> {
  const links = await ipJson<{ ifname?: string; addr_info?: { local?: string }[] }>(
    ['-4', 'addr', 'show'],
    options,
  );
  const out = new Set<string>();
  for (const link of links) {
    if (link.ifname === options.except) continue;
    for (const info of link.addr_info ?? []) if (info.local && isIPv4(info.local)) out.add(info.local);
  }
  return out;
}
