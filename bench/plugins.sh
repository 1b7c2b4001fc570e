#!/usr/bin/env bash
# Builds the reference CNI plugins ptp and host-local from the
# github.com/containernetworking/plugins module pinned in go.mod, into $1
# (default bench/out/plugins). They are built inside their own module, with
# its go.sum, and kept while the version stamp matches.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="$(realpath -m "${1:-bench/out/plugins}")"
mod=github.com/containernetworking/plugins
version="$(go list -m -f '{{.Version}}' "$mod")"
if [[ -x "$out/ptp" && -x "$out/host-local" && "$(cat "$out/VERSION" 2>/dev/null)" == "$version" ]]; then
	exit 0
fi
dir="$(go mod download -json "$mod@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
[[ -d "$dir" ]] || { echo "plugins: cannot find the $mod@$version module" >&2; exit 1; }
mkdir -p "$out"
(cd "$dir" && CGO_ENABLED=0 go build -trimpath -o "$out/" ./plugins/main/ptp ./plugins/ipam/host-local)
echo "$version" >"$out/VERSION"
echo "built ptp and host-local $version into $out" >&2
