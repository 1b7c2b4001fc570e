// Package hubble benchmarks loupe's flow pipeline side by side with Hubble's
// own L3/L4 parser (pkg/hubble/parser/threefour) and filters, on equivalent
// events: the same 5-tuples as loupe datapath records and as Cilium trace
// notifications carrying the raw packet. It is a separate module because
// threefour pulls in most of the Cilium agent.
package hubble

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	v1 "github.com/cilium/cilium/pkg/hubble/api/v1"
	hubblefilters "github.com/cilium/cilium/pkg/hubble/filters"
	"github.com/cilium/cilium/pkg/hubble/parser/threefour"
	"github.com/cilium/cilium/pkg/hubble/testutils"
	"github.com/cilium/cilium/pkg/identity"
	"github.com/cilium/cilium/pkg/ipcache"
	"github.com/cilium/cilium/pkg/labels"
	"github.com/cilium/cilium/pkg/monitor"
	monitorAPI "github.com/cilium/cilium/pkg/monitor/api"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/filters"
)

type tuple struct {
	src, dst     string
	sport, dport uint16
	proto        uint8 // 6 or 17
	tcpFlags     uint8
	toPod        bool // TO_ENDPOINT (else FROM_ENDPOINT)
	reply        bool
	srcID, dstID uint32
	epID         uint16
}

// The event mix: pod to pod SYN, its reply, UDP to a ClusterIP, a remote
// pod's ACK.
func tuples() []tuple {
	var out []tuple
	for i := range 64 {
		switch i % 4 {
		case 0:
			out = append(out, tuple{"10.0.1.11", "10.0.1.10", uint16(30000 + i), 80, 6, 0x02, false, false, 1001, 1000, 11})
		case 1:
			out = append(out, tuple{"10.0.1.10", "10.0.1.11", 80, uint16(30000 + i), 6, 0x12, true, true, 1000, 1001, 11})
		case 2:
			out = append(out, tuple{"10.0.1.10", "10.96.0.50", uint16(40000 + i), 80, 17, 0, false, false, 1000, 1002, 10})
		case 3:
			out = append(out, tuple{"10.0.2.20", "10.0.1.10", uint16(50000 + i), 80, 6, 0x10, true, false, 1003, 1000, 10})
		}
	}
	return out
}

// loupeRecord lays a tuple out as the datapath writes it.
func loupeRecord(t tuple) []byte {
	ev := datapath.Event{
		TimestampNS: 1e9, Type: contract.MessageTypeTrace, Verdict: contract.VerdictForwarded,
		Proto: t.proto, TCPFlags: t.tcpFlags, Ifindex: 7, EndpointID: uint32(t.epID),
		SrcIdentity: t.srcID, DstIdentity: t.dstID,
		Src: netip.MustParseAddr(t.src), Dst: netip.MustParseAddr(t.dst), SrcPort: t.sport, DstPort: t.dport,
		ObsPoint: contract.TraceFromLxc, Direction: contract.DirectionEgress,
	}
	if t.toPod {
		ev.ObsPoint, ev.Direction = contract.TraceToLxc, contract.DirectionIngress
	}
	if t.reply {
		ev.Flags = datapath.FlagReply
	}
	return datapath.MustEncodeEvent(&ev)
}

// ciliumTrace encodes a tuple as Cilium's datapath would: a trace
// notification followed by the Ethernet/IPv4/L4 headers.
func ciliumTrace(tb testing.TB, t tuple) []byte {
	tn := monitor.TraceNotify{
		Type:     monitorAPI.MessageTypeTrace,
		ObsPoint: monitorAPI.TraceFromLxc,
		Source:   t.epID,
		Version:  monitor.TraceNotifyVersion1,
		SrcLabel: identity.NumericIdentity(t.srcID),
		DstLabel: identity.NumericIdentity(t.dstID),
		Reason:   monitor.TraceReasonPolicy,
		Ifindex:  7,
	}
	if t.toPod {
		tn.ObsPoint = monitorAPI.TraceToLxc
	}
	if t.reply {
		tn.Reason = monitor.TraceReasonCtReply
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}, DstMAC: net.HardwareAddr{6, 5, 4, 3, 2, 1}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, SrcIP: net.ParseIP(t.src).To4(), DstIP: net.ParseIP(t.dst).To4()}
	var l4 gopacket.SerializableLayer
	if t.proto == 6 {
		ip.Protocol = layers.IPProtocolTCP
		l4 = &layers.TCP{SrcPort: layers.TCPPort(t.sport), DstPort: layers.TCPPort(t.dport),
			SYN: t.tcpFlags&0x02 != 0, ACK: t.tcpFlags&0x10 != 0}
	} else {
		ip.Protocol = layers.IPProtocolUDP
		l4 = &layers.UDP{SrcPort: layers.UDPPort(t.sport), DstPort: layers.UDPPort(t.dport)}
	}
	b, err := testutils.CreateL3L4Payload(tn, eth, ip, l4)
	if err != nil {
		tb.Fatal(err)
	}
	tn.OrigLen = uint32(len(b))
	return b
}

// The cluster both sides enrich from: the same pods, identities, service.
const cluster = `apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: x, labels: {app: web}}
status: {phase: Running, podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: x, labels: {app: client}}
status: {phase: Running, podIP: 10.0.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: db-0, namespace: "y", labels: {app: db}}
status: {phase: Running, podIP: 10.0.2.20}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: x}
spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}
`

var pods = map[string]struct {
	ns, name string
	id       uint32
	labels   []string
}{
	"10.0.1.10": {"x", "web", 1000, []string{"k8s:app=web", "k8s:io.kubernetes.pod.namespace=x"}},
	"10.0.1.11": {"x", "client", 1001, []string{"k8s:app=client", "k8s:io.kubernetes.pod.namespace=x"}},
	"10.0.2.20": {"y", "db-0", 1003, []string{"k8s:app=db", "k8s:io.kubernetes.pod.namespace=y"}},
}

func hubbleParser(tb testing.TB) *threefour.Parser {
	byIP := map[netip.Addr]*ipcache.K8sMetadata{}
	idByIP := map[netip.Addr]ipcache.Identity{}
	ids := map[uint32]*identity.Identity{}
	for ip, p := range pods {
		a := netip.MustParseAddr(ip)
		byIP[a] = &ipcache.K8sMetadata{Namespace: p.ns, PodName: p.name}
		idByIP[a] = ipcache.Identity{ID: identity.NumericIdentity(p.id)}
		ids[p.id] = identity.NewIdentity(identity.NumericIdentity(p.id), labels.NewLabelsFromModel(p.labels))
	}
	ipGetter := &testutils.FakeIPGetter{
		OnGetK8sMetadata:  func(ip netip.Addr) *ipcache.K8sMetadata { return byIP[ip] },
		OnLookupSecIDByIP: func(ip netip.Addr) (ipcache.Identity, bool) { id, ok := idByIP[ip]; return id, ok },
	}
	idGetter := &testutils.FakeIdentityGetter{OnGetIdentity: func(id uint32) (*identity.Identity, error) {
		if i, ok := ids[id]; ok {
			return i, nil
		}
		return identity.NewIdentity(identity.NumericIdentity(id), labels.Labels{}), nil
	}}
	svc := &flowpb.Service{Name: "web", Namespace: "x"}
	svcGetter := &testutils.FakeServiceGetter{OnGetServiceByAddr: func(ip netip.Addr, port uint16) *flowpb.Service {
		if ip == netip.MustParseAddr("10.96.0.50") && port == 80 {
			return svc
		}
		return nil
	}}
	p, err := threefour.New(slog.New(slog.DiscardHandler), &testutils.NoopEndpointGetter, idGetter,
		&testutils.NoopDNSGetter, ipGetter, svcGetter, &testutils.NoopLinkGetter)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// The filters of `observe -n x --port 80 --not --verdict DROPPED`.
var (
	whitelist = []*flowpb.FlowFilter{
		{SourcePod: []string{"x/"}, DestinationPort: []string{"80"}},
		{DestinationPod: []string{"x/"}, DestinationPort: []string{"80"}},
	}
	blacklist = []*flowpb.FlowFilter{{Verdict: []flowpb.Verdict{flowpb.Verdict_DROPPED}}}
)

func benchLoupe(b *testing.B) {
	var evs [][]byte
	for _, t := range tuples() {
		evs = append(evs, loupeRecord(t))
	}
	snap := &metadata.Snapshot{}
	if _, err := metadata.ParseManifests([]byte(cluster), snap); err != nil {
		b.Fatal(err)
	}
	d := observer.NewDecoder("node-1", metadata.Static{Snap: snap}, nil, func(uint32) string { return "lxc0" })
	wl, err := filters.BuildList(whitelist)
	if err != nil {
		b.Fatal(err)
	}
	bl, err := filters.BuildList(blacklist)
	if err != nil {
		b.Fatal(err)
	}
	matched := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		f, err := d.DecodeFlow(evs[i%len(evs)])
		if err != nil {
			b.Fatal(err)
		}
		if filters.Apply(wl, bl, f) {
			matched++
		}
		i++
	}
	if matched == 0 {
		b.Fatal("no flow matched")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

func benchHubble(b *testing.B, filter bool) {
	var evs [][]byte
	for _, t := range tuples() {
		evs = append(evs, ciliumTrace(b, t))
	}
	p := hubbleParser(b)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	wl, err := hubblefilters.BuildFilterList(ctx, whitelist, hubblefilters.DefaultFilters(log))
	if err != nil {
		b.Fatal(err)
	}
	bl, err := hubblefilters.BuildFilterList(ctx, blacklist, hubblefilters.DefaultFilters(log))
	if err != nil {
		b.Fatal(err)
	}
	matched := 0
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// Like Hubble's observer: a new flow per event, as it is kept in
		// the ring.
		f := &flowpb.Flow{}
		if err := p.Decode(evs[i%len(evs)], f); err != nil {
			b.Fatal(err)
		}
		if filter {
			f.Time = timestamppb.Now()
			if hubblefilters.Apply(wl, bl, &v1.Event{Event: f, Timestamp: f.Time}) {
				matched++
			}
		}
		i++
	}
	if filter && matched == 0 {
		b.Fatal("no flow matched")
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "flows/s")
}

func BenchmarkLoupeDecodeEnrichFilter(b *testing.B)     { benchLoupe(b) }
func BenchmarkHubbleThreefourDecode(b *testing.B)       { benchHubble(b, false) }
func BenchmarkHubbleThreefourDecodeFilter(b *testing.B) { benchHubble(b, true) }

// BenchmarkRatio alternates batches of the same 64 events through both
// pipelines (decode+enrich+filter) in one loop, timing each side, so load
// on the machine hits both alike; it reports loupe's speed-up. Run with
// -cpu 1 for a per-core figure.
func BenchmarkRatio(b *testing.B) {
	tus := tuples()
	var lev, hev [][]byte
	for _, t := range tus {
		lev = append(lev, loupeRecord(t))
		hev = append(hev, ciliumTrace(b, t))
	}
	snap := &metadata.Snapshot{}
	if _, err := metadata.ParseManifests([]byte(cluster), snap); err != nil {
		b.Fatal(err)
	}
	d := observer.NewDecoder("node-1", metadata.Static{Snap: snap}, nil, func(uint32) string { return "lxc0" })
	lwl, _ := filters.BuildList(whitelist)
	lbl, _ := filters.BuildList(blacklist)
	p := hubbleParser(b)
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	hwl, _ := hubblefilters.BuildFilterList(ctx, whitelist, hubblefilters.DefaultFilters(log))
	hbl, _ := hubblefilters.BuildFilterList(ctx, blacklist, hubblefilters.DefaultFilters(log))
	var lt, ht time.Duration
	lm, hm := 0, 0
	for b.Loop() {
		t0 := time.Now()
		for _, raw := range lev {
			f, err := d.DecodeFlow(raw)
			if err != nil {
				b.Fatal(err)
			}
			if filters.Apply(lwl, lbl, f) {
				lm++
			}
		}
		t1 := time.Now()
		for _, raw := range hev {
			f := &flowpb.Flow{}
			if err := p.Decode(raw, f); err != nil {
				b.Fatal(err)
			}
			f.Time = timestamppb.Now()
			if hubblefilters.Apply(hwl, hbl, &v1.Event{Event: f, Timestamp: f.Time}) {
				hm++
			}
		}
		t2 := time.Now()
		lt += t1.Sub(t0)
		ht += t2.Sub(t1)
	}
	if lm != hm {
		b.Fatalf("loupe matched %d flows, hubble %d", lm, hm)
	}
	n := float64(b.N * len(tus))
	b.ReportMetric(n/lt.Seconds(), "loupe-flows/s")
	b.ReportMetric(n/ht.Seconds(), "hubble-flows/s")
	b.ReportMetric(ht.Seconds()/lt.Seconds(), "x-vs-threefour")
}

// The two sides must agree on what they decode, or the comparison is moot.
func TestEquivalentFlows(t *testing.T) {
	p := hubbleParser(t)
	snap := &metadata.Snapshot{}
	if _, err := metadata.ParseManifests([]byte(cluster), snap); err != nil {
		t.Fatal(err)
	}
	d := observer.NewDecoder("node-1", metadata.Static{Snap: snap}, nil, nil)
	for _, tu := range tuples()[:4] {
		hf := &flowpb.Flow{}
		if err := p.Decode(ciliumTrace(t, tu), hf); err != nil {
			t.Fatal(err)
		}
		lf, err := d.DecodeFlow(loupeRecord(tu))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct{ what, h, l string }{
			{"source ip", hf.GetIP().GetSource(), lf.GetIP().GetSource()},
			{"destination ip", hf.GetIP().GetDestination(), lf.GetIP().GetDestination()},
			{"summary", hf.GetSummary(), lf.GetSummary()},
			{"source pod", hf.GetSource().GetPodName(), lf.GetSource().GetPodName()},
			{"destination pod", hf.GetDestination().GetPodName(), lf.GetDestination().GetPodName()},
			{"destination service", hf.GetDestinationService().GetName(), lf.GetDestinationService().GetName()},
			{"verdict", hf.GetVerdict().String(), lf.GetVerdict().String()},
			{"obs point", hf.GetTraceObservationPoint().String(), lf.GetTraceObservationPoint().String()},
			{"is_reply", hf.GetIsReply().String(), lf.GetIsReply().String()},
			{"event type", hf.GetEventType().String(), lf.GetEventType().String()},
		} {
			if c.h != c.l {
				t.Errorf("%v: %s: hubble %q, loupe %q", tu, c.what, c.h, c.l)
			}
		}
	}
}
