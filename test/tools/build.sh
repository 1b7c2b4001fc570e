#!/usr/bin/env bash
# Builds the stock Hubble CLI and Hubble Relay from the github.com/cilium/cilium
# module pinned in go.mod, into a cache directory keyed by that version, and
# prints the directory. A second run with both binaries present does nothing.
#
#   LOUPE_TOOLS_CACHE   cache root (default: $HOME/.cache/loupe-tools)
#   LOUPE_TOOLS_FORCE=1 rebuild even if the binaries exist
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

version="$(go list -m -f '{{.Version}}' github.com/cilium/cilium)"
cache="${LOUPE_TOOLS_CACHE:-$HOME/.cache/loupe-tools}/cilium-${version}"

if [[ "${LOUPE_TOOLS_FORCE:-}" != 1 && -x "$cache/hubble" && -x "$cache/hubble-relay" ]]; then
	echo "$cache"
	exit 0
fi

mkdir -p "$cache"
# Build into a temporary name and rename, so a reader never sees a half-written binary.
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

ldflags="-s -w -X github.com/cilium/cilium/hubble/pkg.Version=${version}"
ldflags="$ldflags -X 'github.com/cilium/cilium/pkg/version.ciliumVersion=${version#v}'"

start=$(date +%s)
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/hubble" github.com/cilium/cilium/hubble >&2
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/hubble-relay" github.com/cilium/cilium/hubble-relay >&2
mv -f "$tmp/hubble" "$cache/hubble"
mv -f "$tmp/hubble-relay" "$cache/hubble-relay"
echo "built hubble and hubble-relay ${version} in $(( $(date +%s) - start ))s" >&2
echo "$cache"
