#!/usr/bin/env bash
# Installs what modemfleet's demo and tests need on a Debian machine (12 or 13): Debian packages,
# Node 22 when the machine's node is older, then the npm dependencies.
# Run as root (or with sudo) for the Debian packages and Node; without root they are only checked.
set -euo pipefail
cd "$(dirname "$0")/.."

# socat: PTYs for the simulated modems. iproute2: `ip` for routing and namespaces.
# nftables: `nft`, through which every packet-filter and NAT ruleset goes (src/net/nft.ts).
# microsocks / tinyproxy: real proxy processes where 3proxy is not installed (it is not in Debian).
# procps: pgrep/ps for the orphan checks. passwd: useradd for the embedded PostgreSQL's user.
# chromium + fonts-dejavu-core: the browser test of the inspector's page (playwright-core drives it).
# systemd: `systemd-analyze verify` of deploy/modemfleet.service. util-linux: setpriv starts every proxy
# and the embedded PostgreSQL under its own uid with no capabilities. curl: the egress-policy tests
# ask the proxies for IPv6 and private destinations.
# pgbouncer: a transaction-mode pooler in front of the test PostgreSQL (test/integration/pgbouncer.test.ts).
PACKAGES=(socat iproute2 nftables microsocks tinyproxy procps passwd util-linux curl chromium fonts-dejavu-core systemd pgbouncer)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  fi
fi

# promtool checks /metrics and deploy/prometheus-rules.yml in the tests. Debian ships it only in the
# prometheus package, whose installation would also enable and start a Prometheus server: the
# package is downloaded and only unpacked into var/promtool of this checkout (nothing installed).
PROMTOOL=var/promtool/usr/bin/promtool
if [ ! -x "$PROMTOOL" ]; then
  deb_dir="$(mktemp -d)"
  if (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1) && mkdir -p var/promtool &&
    dpkg-deb -x "$deb_dir"/prometheus_*.deb var/promtool; then
    echo "setup: promtool unpacked into $PROMTOOL"
  else
    echo "setup: could not download Debian's prometheus package for promtool (run apt-get update first?)" >&2
  fi
  rm -rf "$deb_dir"
fi

# Node: package.json's engines want 22 or newer (22 and 24 are the supported LTS lines); Debian
# ships older ones (12: 18, 13: 20). As root, when the node on PATH is missing or older, Node 22 from
# the npm registry's Node packages goes to /usr/local (scripts/install-node.sh). /usr/local/bin comes
# before /usr/bin on Debian's default PATH, so the `npm` run after this script in the same shell
# (`bash scripts/setup.sh && npm test`) finds Node 22's npm and node, and so do npm's scripts.
# The older node stays where it is (Debian's package, or the host's); it is no longer found first.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(node_major)" -lt 22 ]; then
  found="$(node -v 2>/dev/null || echo none)"
  if [ "$(id -u)" -eq 0 ]; then
    bash scripts/install-node.sh 22 /usr/local
    hash -r
    if [ "$(node_major)" -lt 22 ]; then
      echo "setup: Node 22 is in /usr/local/bin, but PATH finds $(command -v node || echo no node) first: put /usr/local/bin before it (PATH=$PATH)" >&2
      exit 1
    fi
  else
    echo "setup: Node 22 or newer is needed, found $found (run as root: bash scripts/install-node.sh)" >&2
  fi
fi
echo "setup: Node $(node -v 2>/dev/null || echo none) ($(command -v node || echo not on PATH)), npm $(npm -v 2>/dev/null || echo none)"

npm ci --no-audit --no-fund
