import type { EgressOptions } from '../../src/fleet/egress.js';
import type { FleetDataPlaneOptions } from '../../src/fleet/modem.js';
import { directInNamespace } from '../../src/net/nsProbe.js';
import { ECHO_ADDRESS, type NetLab } from '../../src/sim/lab/netLab.js';

/**
 * The data plane of a test supervisor over a NetLab: real proxies (microsocks and tinyproxy) in the
 * farm namespace, listening on every address, under the modems' own uids (61000 + slot), policy
 * routing, no DNS servers, the egress policy admitting the lab's internet (the echo server's
 * address, in a block refused by default), quick proxy restarts. A field of `options` replaces the
 * default whole (`proxyUidBase: undefined`: proxies run as the test does, with no egress policy).
 */
export function labDataPlane(
  net: NetLab,
  runDir: string,
  options: Partial<FleetDataPlaneOptions> = {},
): FleetDataPlaneOptions {
  return {
    netns: net.farm,
    backend: 'microsocks+tinyproxy',
    listen: '0.0.0.0',
    prefix: 24,
    runDir,
    dns: [],
    rulePriorityBase: 1_000,
    proxyUidBase: 61_000,
    egressPolicy: { allow: [ECHO_ADDRESS], deny: [] },
    proxy: { backoffBaseMs: 50, backoffCapMs: 500 },
    ...options,
  };
}

/**
 * The egress guard over a NetLab, every `intervalMs`: the lab's echo server read through the
 * modem's SOCKS port from inside the farm namespace, and the host's own address through the farm's
 * management route (which no port may show).
 */
export function labEgress(
  net: NetLab,
  intervalMs: number,
  options: Partial<EgressOptions> = {},
): EgressOptions {
  return {
    url: net.echoUrl,
    intervalMs,
    probe: (p) => net.probe('socks', p.socksPort, p.user, p.password),
    probeDirect: (url) => directInNamespace(net.farm, url),
    ...options,
  };
}
