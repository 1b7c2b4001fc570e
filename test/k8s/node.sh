#!/usr/bin/env bash
# A single real Kubernetes node in its own network namespace, for loupe's
# end-to-end test: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, containerd (Debian's 1.6), kubelet and kube-proxy
# (iptables mode). Everything listens inside the namespace, so nothing
# clashes with the machine's own ports and the iptables chains go away with
# the namespace.
#
#   node.sh up   WORK K8S_BIN_DIR IMAGE_TAR...   start it and import the images
#   node.sh down WORK                            stop it and undo everything
#   node.sh proxy-stop WORK                      stop kube-proxy and remove its rules
#   node.sh proxy-start WORK                     start kube-proxy again
#
# WORK holds the state (env, pki, logs, data). Inside the namespace the
# node's address is 10.250.0.10 on a veth inside it; pods get 10.244.0.0/24
# from the controller-manager; services are 10.96.0.0/16; pods' DNS is
# 10.96.0.10 (the kube-dns Service of install/kubernetes/dns/) and the
# cluster domain cluster.local.
set -euo pipefail

cmd="${1:?usage: node.sh up|down WORK ...}"
W="${2:?WORK dir}"
NODE_IP=10.250.0.10
NODE_NAME=loupe-e2e-node
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
CLUSTER_DNS=10.96.0.10
SYSCTLS=(kernel.panic kernel.panic_on_oops vm.overcommit_memory)

log() { echo "node.sh: $*" >&2; }

wait_for() { # what timeout-seconds command...
	local what="$1" t="$2"
	shift 2
	local end=$((SECONDS + t))
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS > end)); then
			log "timed out waiting for $what"
			return 1
		fi
		sleep 0.2
	done
}

innet() { nsenter --net="/run/netns/$NS" -- "$@"; }

start() { # name command...: runs in the node netns, logs to WORK/logs/name.log
	local name="$1"
	shift
	setsid nsenter --net="/run/netns/$NS" -- "$@" >"$W/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$W/pids/$name"
}

pki() {
	local d="$W/pki"
	mkdir -p "$d"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=loupe-e2e-ca" \
		-keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
	cert() { # name subject extensions
		openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
		printf '%s\n' "$3" >"$d/$1.ext"
		openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
			-extfile "$d/$1.ext" -out "$d/$1.crt" 2>/dev/null
	}
	cert apiserver "/CN=kube-apiserver" \
		"subjectAltName=IP:127.0.0.1,IP:$NODE_IP,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth"
	# One cluster-admin identity for the components and the test: this node
	# tests loupe, not Kubernetes' own RBAC.
	cert admin "/O=system:masters/CN=loupe-e2e-admin" "extendedKeyUsage=clientAuth"
	openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
	openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
	cat >"$W/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: https://$NODE_IP:6443
    certificate-authority: $d/ca.crt
users:
- name: admin
  user:
    client-certificate: $d/admin.crt
    client-key: $d/admin.key
contexts:
- name: e2e
  context: {cluster: e2e, user: admin}
current-context: e2e
KC
}

up() {
	local K="${3:?K8S_BIN_DIR}"
	shift 3
	mkdir -p "$W"/{logs,pids,etcd,containerd,kubelet}
	NS="loupe-k8s-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
	echo "NS=$NS" >"$W/env"
	echo "K=$K" >>"$W/env"
	for s in "${SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s")"; done >"$W/sysctls.saved"
	# Host folders the CNI uses; remember which ones we create.
	: >"$W/created"
	for d in /opt/cni /opt/cni/bin /etc/cni /etc/cni/net.d /run/loupe; do
		[[ -d $d ]] || { mkdir "$d" && echo "$d" >>"$W/created"; }
	done
	if [[ ! -e /opt/cni/bin/loopback ]]; then
		ln -s /usr/lib/cni/loopback /opt/cni/bin/loopback
		echo /opt/cni/bin/loopback >>"$W/created"
	fi
	ls /var/log/pods 2>/dev/null | sort >"$W/varlogpods.before" || true
	mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

	ip netns add "$NS"
	ip -n "$NS" link set lo up
	# Forwarding on, as kubeadm requires of a node: the unprivileged agent
	# cannot write /proc/sys.
	ip netns exec "$NS" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
	# A veth pair with both ends inside: the node's "NIC" (no dummy module here).
	ip -n "$NS" link add node0 type veth peer name node0-peer
	ip -n "$NS" link set node0-peer up
	ip -n "$NS" addr add "$NODE_IP/24" dev node0
	ip -n "$NS" link set node0 up
	ip -n "$NS" route add default dev node0

	pki
	local p="$W/pki"
	start etcd etcd --name e2e --data-dir "$W/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster e2e=http://127.0.0.1:2380
	start kube-apiserver "$K/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port=6443 \
		--tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
		--service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-cluster-ip-range="$SERVICE_CIDR" --authorization-mode=Node,RBAC --allow-privileged=true \
		--kubelet-client-certificate="$p/admin.crt" --kubelet-client-key="$p/admin.key" \
		--kubelet-preferred-address-types=InternalIP
	wait_for "the API server" 60 innet "$K/kubectl" --kubeconfig "$W/kubeconfig" get --raw /readyz
	start kube-controller-manager "$K/kube-controller-manager" --kubeconfig="$W/kubeconfig" \
		--authentication-kubeconfig="$W/kubeconfig" --authorization-kubeconfig="$W/kubeconfig" \
		--service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
		--cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
		--use-service-account-credentials=true --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" \
		--node-cidr-mask-size=24 --service-cluster-ip-range="$SERVICE_CIDR" --leader-elect=false \
		--bind-address=127.0.0.1
	start kube-scheduler "$K/kube-scheduler" --kubeconfig="$W/kubeconfig" \
		--authentication-kubeconfig="$W/kubeconfig" --authorization-kubeconfig="$W/kubeconfig" \
		--leader-elect=false --bind-address=127.0.0.1

	cat >"$W/containerd.toml" <<TOML
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$W/containerd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/loupe-pause:e2e"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
TOML
	start containerd containerd --config "$W/containerd.toml"
	wait_for containerd 30 ctr -a "$W/containerd/containerd.sock" version
	local img
	for img in "$@"; do
		ctr -a "$W/containerd/containerd.sock" -n k8s.io images import "$img" >&2
	done

	cat >"$W/kubelet.yaml" <<KY
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
address: 0.0.0.0
containerRuntimeEndpoint: unix://$W/containerd/containerd.sock
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $p/ca.crt}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
clusterDNS: [$CLUSTER_DNS]
clusterDomain: cluster.local
KY
	start kubelet "$K/kubelet" --kubeconfig="$W/kubeconfig" --config="$W/kubelet.yaml" \
		--node-ip="$NODE_IP" --hostname-override="$NODE_NAME" --root-dir="$W/kubelet" --cert-dir="$W/kubelet/pki"
	start_proxy
	wait_for "the node to register" 60 innet "$K/kubectl" --kubeconfig "$W/kubeconfig" get node "$NODE_NAME"
	wait_for "the node's pod CIDR" 60 bash -c "nsenter --net=/run/netns/$NS -- '$K/kubectl' --kubeconfig '$W/kubeconfig' get node $NODE_NAME -o jsonpath='{.spec.podCIDR}' | grep -q /"
	log "node $NODE_NAME up in netns $NS"
}

start_proxy() {
	start kube-proxy "$K/kube-proxy" --kubeconfig="$W/kubeconfig" --hostname-override="$NODE_NAME" \
		--proxy-mode=iptables --cluster-cidr="$CLUSTER_CIDR" --conntrack-max-per-core=0 \
		--metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
}

# A node without kube-proxy: the process stopped and, as after removing its
# DaemonSet, the rules it left flushed (kube-proxy --cleanup).
proxy_stop() {
	# shellcheck disable=SC1091
	source "$W/env"
	stop_pid kube-proxy
	innet "$K/kube-proxy" --cleanup >>"$W/logs/kube-proxy-cleanup.log" 2>&1
	log "kube-proxy stopped, its rules removed"
}

proxy_start() {
	# shellcheck disable=SC1091
	source "$W/env"
	start_proxy
	wait_for "kube-proxy's healthz" 30 innet bash -c "exec 3<>/dev/tcp/127.0.0.1/10256"
	log "kube-proxy started"
}

stop_pid() { # name
	local f="$W/pids/$1" pid
	[[ -f $f ]] || return 0
	pid="$(cat "$f")"
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	[[ -f "$W/env" ]] || { log "nothing to tear down in $W"; return 0; }
	# shellcheck disable=SC1091
	source "$W/env"
	local sock="$W/containerd/containerd.sock"
	stop_pid kube-proxy
	stop_pid kubelet
	# Whatever kubelet left running: containers of the k8s.io namespace.
	if [[ -S $sock ]]; then
		local t
		for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
			ctr -a "$sock" -n k8s.io tasks kill -s KILL "$t" >/dev/null 2>&1 || true
		done
		for t in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
			wait_for "task $t to stop" 10 bash -c "ctr -a '$sock' -n k8s.io tasks ls | awk '\$1==\"$t\" && \$3==\"STOPPED\"' | grep -q ." || true
			ctr -a "$sock" -n k8s.io tasks delete "$t" >/dev/null 2>&1 || true
		done
	fi
	stop_pid containerd
	# containerd-shims started by our containerd carry its socket path.
	local pid
	for pid in $(pgrep -f -- "-address $sock" || true); do kill -KILL "$pid" 2>/dev/null || true; done
	stop_pid kube-scheduler
	stop_pid kube-controller-manager
	stop_pid kube-apiserver
	stop_pid etcd
	# loupe's own uninstall: pins, attachments, state, sockets, gateway link
	# and the conflist.
	if [[ -n ${LOUPE_BIN:-} && -x $LOUPE_BIN/loupe-agent ]]; then
		nsenter --net="/run/netns/$NS" -- "$LOUPE_BIN/loupe-agent" cleanup >&2 || log "loupe-agent cleanup failed"
	fi
	# Mounts under WORK (pod volumes, overlay snapshots, netns of sandboxes).
	local m
	for m in $(awk -v w="$W" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r); do
		umount -l "$m" 2>/dev/null || true
	done
	for m in $(awk '$2 ~ "^/run/netns/cni-" {print $2}' /proc/self/mounts); do
		umount -l "$m" 2>/dev/null && rm -f "$m" || true
	done
	# kubepods cgroups, deepest first.
	local c
	for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		[[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
	ip netns del "$NS" 2>/dev/null || true
	if [[ -f "$W/sysctls.saved" ]]; then
		while IFS= read -r kv; do sysctl -qw "$kv" || true; done <"$W/sysctls.saved"
	fi
	rm -f /opt/cni/bin/loupe-cni
	if [[ -f "$W/created" ]]; then
		tac "$W/created" | while read -r p; do rm -f "$p" 2>/dev/null || rmdir "$p" 2>/dev/null || true; done
	fi
	rmdir /run/loupe 2>/dev/null || true
	if [[ -f "$W/varlogpods.before" ]]; then
		comm -13 "$W/varlogpods.before" <(ls /var/log/pods 2>/dev/null | sort) | while read -r d; do rm -rf "/var/log/pods/$d"; done
		find /var/log/containers -xtype l -delete 2>/dev/null || true
	fi
	rm -f "$W/env"
	log "node down"
}

case "$cmd" in
up) up "$@" ;;
down) down ;;
proxy-stop) proxy_stop ;;
proxy-start) proxy_start ;;
*) echo "usage: node.sh up|down|proxy-stop|proxy-start WORK ..." >&2; exit 2 ;;
esac
