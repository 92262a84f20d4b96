import { getViaSocks5 } from '../net/proxyClient.js';

export interface EgressOptions {
  /** An echo server's URL (http://IPV4[:PORT]/) that answers with the client's address. */
  url: string;
  intervalMs: number;
  /** How a port is reached (default: a SOCKS5 request from here; in a namespace, from inside it). */
  probe?: (port: ProxyEndpoint, url: string) => Promise<string | null>;
}

export interface ProxyEndpoint {
  socksPort: number;
  user: string;
  password: string;
}

/** What the echo server sees through a modem's own SOCKS port; null when the request fails. */
export function probeEgress(egress: EgressOptions, endpoint: ProxyEndpoint): Promise<string | null> {
  if (egress.probe) return egress.probe(endpoint, egress.url);
  return getViaSocks5(
    { host: '127.0.0.1', port: endpoint.socksPort, user: endpoint.user, password: endpoint.password },
    egress.url,
  ).then(
    (answer) => (answer.status === 200 ? answer.body.trim() : null),
    () => null,
  );
}
