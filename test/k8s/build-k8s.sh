#!/usr/bin/env bash
# Builds the Kubernetes node binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl) of one version into a cache
# directory keyed by that version, and prints the directory. A second run with
# every binary present does nothing.
#
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces its staging
# modules with local paths), so this builds from a scratch module that requires
# it and replaces each staging module with the matching published v0.x version.
#
#   LOUPE_K8S_VERSION   Kubernetes version (default v1.34.4)
#   LOUPE_K8S_CACHE     cache root (default: $HOME/.cache/loupe-k8s)
#   LOUPE_K8S_FORCE=1   rebuild even if the binaries exist
set -euo pipefail

version="${LOUPE_K8S_VERSION:-v1.34.4}"
cache="${LOUPE_K8S_CACHE:-$HOME/.cache/loupe-k8s}/kubernetes-${version}"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

have_all() {
	local b
	for b in "${bins[@]}"; do [[ -x "$cache/$b" ]] || return 1; done
}
if [[ "${LOUPE_K8S_FORCE:-}" != 1 ]] && have_all; then
	echo "$cache"
	exit 0
fi

mkdir -p "$cache"
mod="$cache/module"
mkdir -p "$mod"
tmp="$(mktemp -d "$cache/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)

# Staging modules are published as k8s.io/<m> v0.<minor>.<patch>.
staging_version="v0.${version#v1.}"
upstream_gomod="$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@${version}" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
[[ -f "$upstream_gomod" ]] || { echo "build-k8s: cannot find go.mod of k8s.io/kubernetes@${version}" >&2; exit 1; }

{
	echo "module loupe.dev/k8s-node-build"
	echo
	echo "go 1.24"
	echo
	echo "require k8s.io/kubernetes ${version}"
	echo
	grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/' "$upstream_gomod" |
		awk -v v="$staging_version" '{print "replace " $1 " => " $1 " " v}'
} >"$mod/go.mod"
n="$(grep -c '^replace ' "$mod/go.mod")"
echo "build-k8s: ${version} with ${n} staging modules at ${staging_version}" >&2

cat >"$mod/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubectl/pkg/cmd"
)
GO
cat >"$mod/kubectl.go" <<'GO'
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubectl/pkg/cmd"
)

func main() {
	os.Exit(cli.Run(cmd.NewDefaultKubectlCommand()))
}
GO

cd "$mod"
GOFLAGS=-mod=mod go mod tidy -e >&2

ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$version" | cut -d. -f2)"
ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=${version}"
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
	[[ "${LOUPE_K8S_FORCE:-}" != 1 && -x "$cache/$b" ]] && continue
	t0=$(date +%s)
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b" >&2
	mv -f "$tmp/$b" "$cache/$b"
	echo "build-k8s: $b in $(( $(date +%s) - t0 ))s" >&2
done
if [[ "${LOUPE_K8S_FORCE:-}" == 1 || ! -x "$cache/kubectl" ]]; then
	t0=$(date +%s)
	CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/kubectl" . >&2
	mv -f "$tmp/kubectl" "$cache/kubectl"
	echo "build-k8s: kubectl in $(( $(date +%s) - t0 ))s" >&2
fi
echo "build-k8s: built ${version} in $(( $(date +%s) - start ))s" >&2
echo "$cache"
