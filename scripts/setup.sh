#!/usr/bin/env bash
# Installs what modemfleet's demo and tests need on a Debian machine, then the npm dependencies.
# Run as root (or with sudo) for the Debian packages; without root they are only checked.
set -euo pipefail
cd "$(dirname "$0")/.."

# socat: PTYs for the simulated modems. iproute2: `ip` for routing and namespaces.
# nftables: `nft`, through which every packet-filter and NAT ruleset goes (src/net/nft.ts).
# microsocks / tinyproxy: real proxy processes where 3proxy is not installed (it is not in Debian).
# procps: pgrep/ps for the orphan checks. passwd: useradd for the embedded PostgreSQL's user.
# chromium + fonts-dejavu-core: the browser test of the inspector's page (playwright-core drives it).
# systemd: `systemd-analyze verify` of deploy/modemfleet.service.
PACKAGES=(socat iproute2 nftables microsocks tinyproxy procps passwd chromium fonts-dejavu-core systemd)

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

npm ci --no-audit --no-fund
