package ui

import (
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
)

// Node kinds that are not workloads.
const (
	KindWorld      = "world"
	KindHost       = "host"
	KindRemoteNode = "remote-node"
	KindAPIServer  = "kube-apiserver"
	KindUnknown    = "unknown"
)

// nodeKey identifies a service-map node without allocating: the namespace
// ("" for world, host and other reserved peers) and the workload name.
type nodeKey struct{ ns, name string }

// endpointKey maps a flow endpoint to its service-map node: its workload
// (Deployment, StatefulSet, DaemonSet …), else its pod, else the reserved
// entity its identity or labels name.
func endpointKey(ep *flowpb.Endpoint) (nodeKey, string) {
	if ep == nil {
		return nodeKey{name: KindWorld}, KindWorld
	}
	if ws := ep.GetWorkloads(); len(ws) > 0 && ws[0].GetName() != "" {
		kind := ws[0].GetKind()
		if kind == "" {
			kind = "Workload"
		}
		return nodeKey{ep.GetNamespace(), ws[0].GetName()}, kind
	}
	if pod := ep.GetPodName(); pod != "" {
		return nodeKey{ep.GetNamespace(), pod}, "Pod"
	}
	if k := reservedKind(ep); k != "" {
		return nodeKey{name: k}, k
	}
	if ns := ep.GetNamespace(); ns != "" {
		return nodeKey{ns, KindUnknown}, KindUnknown
	}
	return nodeKey{name: KindWorld}, KindWorld
}

// reservedKind names the reserved entity of an endpoint without a pod, by
// its reserved label, else by its identity.
func reservedKind(ep *flowpb.Endpoint) string {
	for _, l := range ep.GetLabels() {
		if r, ok := strings.CutPrefix(l, contract.ReservedLabelPrefix); ok {
			if k := reservedKinds[r]; k != "" {
				return k
			}
		}
	}
	return reservedKinds[contract.ReservedName(ep.GetIdentity())]
}

// reservedKinds maps Cilium's reserved identity names to the map's kinds.
var reservedKinds = map[string]string{
	contract.ReservedName(contract.IdentityHost):          KindHost,
	contract.ReservedName(contract.IdentityRemoteNode):    KindRemoteNode,
	contract.ReservedName(contract.IdentityKubeAPIServer): KindAPIServer,
	contract.ReservedName(contract.IdentityWorld):         KindWorld,
	contract.ReservedName(contract.IdentityWorldIPv4):     KindWorld,
	contract.ReservedName(contract.IdentityWorldIPv6):     KindWorld,
}

// nodeID is the node's name on the wire: "namespace/name", or the reserved
// entity's name.
func (k nodeKey) id() string {
	if k.ns == "" {
		return k.name
	}
	return k.ns + "/" + k.name
}

// l4 returns the protocol and the source and destination ports of a flow.
func l4(f *flowpb.Flow) (proto uint8, sport, dport uint32) {
	l := f.GetL4()
	if l == nil {
		return protoOther, 0, 0
	}
	switch p := l.GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		return protoTCP, p.TCP.GetSourcePort(), p.TCP.GetDestinationPort()
	case *flowpb.Layer4_UDP:
		return protoUDP, p.UDP.GetSourcePort(), p.UDP.GetDestinationPort()
	case *flowpb.Layer4_SCTP:
		return protoSCTP, p.SCTP.GetSourcePort(), p.SCTP.GetDestinationPort()
	case *flowpb.Layer4_ICMPv4:
		return protoICMPv4, 0, 0
	case *flowpb.Layer4_ICMPv6:
		return protoICMPv6, 0, 0
	}
	return protoOther, 0, 0
}

const (
	protoOther uint8 = iota
	protoTCP
	protoUDP
	protoSCTP
	protoICMPv4
	protoICMPv6
)

var protoNames = [...]string{"other", "TCP", "UDP", "SCTP", "ICMPv4", "ICMPv6"}

// flowType is the TYPE column of `hubble observe`, from the event type.
func flowType(f *flowpb.Flow) string {
	switch f.GetEventType().GetType() {
	case contract.MessageTypeDrop:
		return "drop"
	case contract.MessageTypeTrace:
		if op := f.GetTraceObservationPoint(); op != flowpb.TraceObservationPoint_UNKNOWN_POINT {
			return strings.ToLower(strings.ReplaceAll(op.String(), "_", "-"))
		}
		return "trace"
	case contract.MessageTypePolicyVerdict:
		return "policy-verdict"
	case contract.MessageTypeAccessLog:
		return "l7"
	}
	if t := f.GetType(); t != flowpb.FlowType_UNKNOWN_TYPE {
		return strings.ToLower(t.String())
	}
	return "unknown"
}

// dropReason names a flow's drop reason.
func dropReason(f *flowpb.Flow) string {
	if d := f.GetDropReasonDesc(); d != flowpb.DropReason_DROP_REASON_UNKNOWN {
		return d.String()
	}
	if r := f.GetDropReason(); r != 0 {
		if n, ok := flowpb.DropReason_name[int32(r)]; ok {
			return n
		}
		return "DROP_REASON_" + itoa(uint64(r))
	}
	return ""
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			return string(b[i:])
		}
	}
}
