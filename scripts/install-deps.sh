#!/usr/bin/env bash
# Installs what building and testing loupe needs on a fresh Debian machine,
# and mounts the kernel filesystems the datapath uses. Safe to run twice.
set -euo pipefail

pkgs=(clang llvm libbpf-dev bpftool iproute2 iperf3 iputils-ping ethtool protobuf-compiler make git chromium)
# The Kubernetes end-to-end test's node (test/k8s/node.sh): Debian's
# container runtime, etcd, the loopback CNI plugin, and openssl for its PKI.
pkgs+=(containerd runc etcd-server containernetworking-plugins openssl iptables)
# The dashboards test (lab) starts its own Prometheus; the package's service stays off.
pkgs+=(prometheus)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The UI's assets and browser tests need node and npm; machines of this kind
# ship them, Debian's packages are the fallback.
command -v npm >/dev/null || missing+=(nodejs npm)
if ((${#missing[@]})); then
	echo "installing: ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if command -v systemctl >/dev/null && systemctl is-enabled prometheus >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi

# bpffs and tracefs: the agent mounts bpffs under its own --bpf-root, but
# tools and tests expect the standard mounts to exist too.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
if ! mountpoint -q /sys/kernel/tracing; then
	mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
