// Package lab builds a Kubernetes-like cluster on one machine out of network
// namespaces, for the demo, the tests and the benchmarks (`loupe lab ...`).
//
// # Addressing and names
//
// A lab has a name (a short prefix, default "loupe") and a subnet index i
// (0 for the default lab, the lowest free one in 1..99 for any other lab):
//
//	underlay bridge   <name>-br            172.30.i.1/24 in the root netns
//	node N netns      <name>-node<N>       eth0 = 172.30.i.(10+N)/24
//	node N root veth  <name>-n<N>          enslaved to the bridge
//	node N pod CIDR   10.244.N.0/24 (i=0), 10.(100+i).N.0/24 (i>0)
//	pod netns         <name>-<namespace>.<pod>
//	agent Observer    172.30.i.(10+N):4244, metrics :9962
//
// Every node netns routes the other nodes' pod CIDRs via their node address
// (native routing) and has a default route to the bridge; the root netns
// routes every pod CIDR via its node, so the CLI and a relay on the host reach
// every agent and pod. The node name in Kubernetes objects is the node's netns
// name.
//
// # Lab directory
//
// State lives in the lab directory: /run/loupe-lab by default, or --lab-dir /
// $LOUPE_LAB_DIR, so tests run isolated labs side by side:
//
//	lab.json                 the lab: name, index, XDP mode, nodes, relay and UI addresses
//	lock                     flock held by up, apply, delete and down
//	manifests/               the "API server" every agent watches (docs/contracts.md, "Manifests folder")
//	manifests/GENERATION     bumped after every change
//	bpf/                     one bpffs mount; bpf/<node>/ is each agent's --bpf-root
//	nodes/<node>/            agent state dir, agent.sock, agent.log, agent.pid
//	cni/loupe.conflist       the network config handed to libcni
//	cni/cache/               libcni's result cache
//	pods/<ns>.<pod>.json     the lab's record of a pod (netns, node, IP, container ID)
//	pods/<ns>.<pod>.log|pid  the pod's server
package lab
