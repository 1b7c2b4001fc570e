package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/secevents"
	"github.com/loupe-project/loupe/secevents/server"
)

// newNetRules is the agent's network-rule sink with the default rules and
// the local pods pods, by address.
func newNetRules(t testing.TB, pods map[string]string) *securityEvents {
	rs, err := secevents.CompileFor([]secevents.Source{secevents.DefaultRules()}, nil, secevents.Capabilities{})
	if err != nil {
		t.Fatal(err)
	}
	s := &securityEvents{cfg: &Config{NodeName: "node-1"}, log: slog.New(slog.DiscardHandler), store: server.NewStore(0),
		acts: newSecActions(), net: newNetState(), engine: secevents.NewEngine(rs)}
	byIP := map[netip.Addr]*netnsPod{}
	for ip, name := range pods {
		byIP[netip.MustParseAddr(ip)] = &netnsPod{namespace: "ns", name: name, key: "ns/" + name}
	}
	s.byIP.Store(&byIP)
	return s
}

// synFlow is a pod's connect: an egress SYN, as the decoder makes it.
func synFlow(src, dst string, port uint32, identity uint32, ns int64) *flowpb.Flow {
	return &flowpb.Flow{
		Time: timestamppb.New(time.Unix(0, ns)), Verdict: flowpb.Verdict_FORWARDED,
		TrafficDirection: flowpb.TrafficDirection_EGRESS, IsReply: wrapperspb.Bool(false),
		IP: &flowpb.IP{Source: src, Destination: dst, IpVersion: flowpb.IPVersion_IPv4},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: 40000, DestinationPort: port,
			Flags: &flowpb.TCPFlags{SYN: true}}}},
		Destination: &flowpb.Endpoint{Identity: identity},
	}
}

// Each flow's event is its own: two pods' connects to the API server,
// one after the other, fire two events that each name their pod and
// address (the sink reuses one event between flows).
func TestNetRulesEventsAreTheirFlows(t *testing.T) {
	s := newNetRules(t, map[string]string{"10.0.1.5": "a", "10.0.1.6": "b"})
	s.Flow(synFlow("10.0.1.5", "10.96.0.1", 443, contract.IdentityKubeAPIServer, 100e9))
	s.Flow(synFlow("10.0.1.6", "10.96.0.1", 443, contract.IdentityKubeAPIServer, 101e9))
	evs, _, _, _ := s.store.Read(0)
	if len(evs) != 2 {
		t.Fatalf("%d events, want 2: %v", len(evs), evs)
	}
	for i, want := range []struct{ pod, ip string }{{"a", "10.0.1.5"}, {"b", "10.0.1.6"}} {
		e := evs[i].GetEvent()
		if e.GetPod() != want.pod || e.GetSourceIp() != want.ip || e.GetDestinationPort() != 443 || e.GetTimeUnixNano() != int64(100+i)*1e9 {
			t.Fatalf("event %d: %v, want pod %s from %s", i, e, want.pod, want.ip)
		}
	}
}

// BenchmarkNetRulesFlow is the network rules' work per flow a local pod
// sends: a connect (the events benchmark's every event) and a
// connection's later packet (most flows), which is no event.
func BenchmarkNetRulesFlow(b *testing.B) {
	for _, c := range []struct {
		name  string
		flags *flowpb.TCPFlags
	}{{"connect", &flowpb.TCPFlags{SYN: true}}, {"later-packet", &flowpb.TCPFlags{ACK: true}}} {
		b.Run(c.name, func(b *testing.B) {
			s := newNetRules(b, map[string]string{"10.0.1.5": "a"})
			flows := make([]*flowpb.Flow, 4096)
			for i := range flows {
				flows[i] = synFlow("10.0.1.5", fmt.Sprintf("10.0.2.%d", i%250+1), uint32(8000+i%16), 1234, int64(i)*10e3) // 100k/s
				flows[i].L4.GetTCP().Flags = c.flags
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				s.Flow(flows[i%len(flows)])
				i++
			}
		})
	}
}
