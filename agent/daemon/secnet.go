package daemon

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/secevents"
)

// Network rules over the observer's flows: the agent is a flow sink, and
// turns each flow a local pod started (egress, not a reply) into a
// network event. The pod's own node is the only one that sees it so, so
// each rule fires once in the cluster.

// netEventScratch is a network event and its network part, reused for
// every flow (see netEvent).
type netEventScratch struct {
	secevents.Event
	net secevents.NetEvent
}

// netState is the network rules' state in the agent.
type netState struct {
	tracker *secevents.NetTracker
	refire  *secevents.Refire
	api     netip.AddrPort // KUBERNETES_SERVICE_HOST:PORT, when set
}

func newNetState() *netState {
	n := &netState{tracker: secevents.NewNetTracker(), refire: secevents.NewRefire()}
	if ap, err := netip.ParseAddrPort(net.JoinHostPort(os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))); err == nil {
		n.api = ap
	}
	return n
}

// Flow is the observer's sink, called from the goroutine that follows
// its ring (FollowSink), one flow at a time: it must not keep or modify
// the flow.
func (s *securityEvents) Flow(f *flowpb.Flow) {
	ev := s.netEvent(f)
	if ev == nil {
		return
	}
	for _, m := range s.engine.MatchNetwork(ev, s.net.refire) {
		s.acts.count(m.Rule)
		s.store.Add(s.netResponse(ev, m))
	}
}

// netEvent is the network event of a flow, or nil when the flow is not
// one a local pod started.
func (s *securityEvents) netEvent(f *flowpb.Flow) *secevents.Event {
	if f.GetTrafficDirection() != flowpb.TrafficDirection_EGRESS || f.GetIsReply().GetValue() || f.GetIP() == nil {
		return nil
	}
	// The checks that need no lookup come first: most flows are a
	// connection's later packets, which are no event.
	typ, l4, dport := "connect", "", uint32(0)
	switch l4p := f.GetL4(); {
	case l4p.GetTCP() != nil:
		l4, dport = "tcp", l4p.GetTCP().GetDestinationPort()
	case l4p.GetUDP() != nil:
		l4, dport = "udp", l4p.GetUDP().GetDestinationPort()
	case l4p.GetICMPv4() != nil || l4p.GetICMPv6() != nil:
		l4 = "icmp"
	default:
		return nil
	}
	var query string
	if l7 := f.GetL7(); l7 != nil {
		d := l7.GetDns()
		if l7.GetType() != flowpb.L7FlowType_REQUEST || d == nil || d.GetQuery() == "" {
			return nil
		}
		typ, query = "dns", strings.TrimSuffix(d.GetQuery(), ".")
	} else if t := f.GetL4().GetTCP(); t != nil && !(t.GetFlags().GetSYN() && !t.GetFlags().GetACK()) {
		// A connection's later packets, and TCP events without flags
		// (resets, retransmissions): only the SYN is the connect.
		return nil
	}
	src, err := netip.ParseAddr(f.GetIP().GetSource())
	if err != nil {
		return nil
	}
	pod := s.localPod(src)
	if pod == nil {
		return nil
	}
	dst, err := netip.ParseAddr(f.GetIP().GetDestination())
	if err != nil {
		return nil
	}
	// The event lives in s.scratch: Flow runs one flow at a time, and
	// nothing keeps the event past Flow.
	ev := &s.scratch
	*ev = netEventScratch{}
	n := &ev.net
	n.SrcIP, n.DstIP, n.L4, n.DstPort, n.DNSQuery = src, dst, l4, dport, query
	labels := f.GetDestination().GetLabels()
	n.World = slices.ContainsFunc(labels, func(l string) bool { return strings.HasPrefix(l, "reserved:world") })
	n.APIServer = f.GetDestination().GetIdentity() == contract.IdentityKubeAPIServer || slices.Contains(labels, "reserved:kube-apiserver") ||
		(f.GetDestinationService().GetName() == "kubernetes" && f.GetDestinationService().GetNamespace() == "default") ||
		(s.net.api.IsValid() && s.net.api == netip.AddrPortFrom(dst, uint16(n.DstPort)))
	var now time.Time
	if t := f.GetTime(); t != nil {
		now = t.AsTime()
	} else {
		now = time.Now()
	}
	if typ == "connect" {
		key := pod.key
		if key == "" { // a pod not from the endpoint list
			key = pod.namespace + "/" + pod.name
		}
		s.net.tracker.Observe(key, n, now)
	}
	ev.Event = secevents.Event{Num: s.num.Add(1), Time: now, Type: typ, Net: n, Node: s.cfg.NodeName,
		Namespace: pod.namespace, Pod: pod.name, Labels: pod.labels, ContainerID: pod.netnsName}
	return &ev.Event
}

func (s *securityEvents) netResponse(ev *secevents.Event, m secevents.Match) *pb.GetEventsResponse {
	n := ev.Net
	se := &pb.SecurityEvent{TimeUnixNano: ev.Time.UnixNano(), NodeName: s.cfg.NodeName, Rule: m.Rule.Name,
		Priority: m.Rule.Priority.String(), Output: m.Output, Tags: m.Rule.Tags, Namespace: ev.Namespace, Pod: ev.Pod,
		ContainerId: ev.ContainerID, EventType: ev.Type, AttributedBy: "flow", SourceIp: n.SrcIP.String(),
		DestinationIp: n.DstIP.String(), DestinationPort: n.DstPort, L4Protocol: n.L4, DnsQuery: n.DNSQuery}
	return &pb.GetEventsResponse{NodeName: s.cfg.NodeName, TimeUnixNano: se.TimeUnixNano, ResponseTypes: &pb.GetEventsResponse_Event{Event: se}}
}

// localPod is the local pod with address a, from the table the kill
// sync refreshes.
func (s *securityEvents) localPod(a netip.Addr) *netnsPod {
	if m := s.byIP.Load(); m != nil {
		return (*m)[a]
	}
	return nil
}
