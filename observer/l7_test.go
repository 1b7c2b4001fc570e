package observer

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/dns/dnsmessage"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer/aggregate"
)

func dnsMsg(t testing.TB, id uint16, name string, resp bool, rcode dnsmessage.RCode, ips ...string) []byte {
	t.Helper()
	n := dnsmessage.MustNewName(name)
	m := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: id, Response: resp, RCode: rcode},
		Questions: []dnsmessage.Question{{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}},
	}
	for _, ip := range ips {
		m.Answers = append(m.Answers, dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: n, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 30},
			Body:   &dnsmessage.AResource{A: netip.MustParseAddr(ip).As4()},
		})
	}
	b, err := m.Pack()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func l7Rec(ts uint64, src, dst string, sport, dport uint16, dir uint8, data []byte) []byte {
	return mustL7(&datapath.L7Record{TimestampNS: ts, Ifindex: 7, EndpointID: 3,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport,
		Proto: 17, Kind: datapath.L7DNS, Direction: dir, PayloadLen: uint32(len(data)), Data: data})
}

func mustL7(r *datapath.L7Record) []byte {
	b, err := datapath.EncodeL7Record(r)
	if err != nil {
		panic(err)
	}
	return b
}

func ringFlows(o *Observer) []*flowpb.Flow {
	var out []*flowpb.Flow
	head := o.ring.head.Load()
	for seq := o.ring.oldest(head); seq < head; seq++ {
		if e, _ := o.ring.read(seq); e != nil && e.flow != nil {
			out = append(out, e.flow)
		}
	}
	return out
}

const (
	clientPod = "10.0.1.11" // x/b
	serverPod = "10.0.2.20" // y/db-0
	world     = "192.0.2.1"
)

func TestL7DNSFlows(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	ms := uint64(time.Millisecond)
	// Seen at the client pod's veth: the query leaves, the answer arrives.
	o.HandleL7(l7Rec(1000*ms, clientPod, serverPod, 40000, 53, contract.DirectionEgress, dnsMsg(t, 5, "db-0.y.pod.lab.", false, 0)))
	o.HandleL7(l7Rec(1003*ms, serverPod, clientPod, 53, 40000, contract.DirectionIngress, dnsMsg(t, 5, "db-0.y.pod.lab.", true, 0, serverPod)))
	// The same exchange at the server pod's veth is reported by the client's.
	o.HandleL7(l7Rec(1001*ms, clientPod, serverPod, 40000, 53, contract.DirectionIngress, dnsMsg(t, 5, "db-0.y.pod.lab.", false, 0)))
	o.HandleL7(l7Rec(1002*ms, serverPod, clientPod, 53, 40000, contract.DirectionEgress, dnsMsg(t, 5, "db-0.y.pod.lab.", true, 0, serverPod)))
	// A client outside the cluster is reported at the server's veth.
	o.HandleL7(l7Rec(2000*ms, world, serverPod, 5000, 53, contract.DirectionIngress, dnsMsg(t, 6, "nope.lab.", false, 0)))
	o.HandleL7(l7Rec(2010*ms, serverPod, world, 53, 5000, contract.DirectionEgress, dnsMsg(t, 6, "nope.lab.", true, dnsmessage.RCodeNameError)))
	// Garbage on port 53 is counted, not a flow.
	o.HandleL7(l7Rec(3000*ms, clientPod, serverPod, 40001, 53, contract.DirectionEgress, []byte("GET / HTTP/1.1\r\n\r\n")))

	fs := ringFlows(o)
	if len(fs) != 4 {
		t.Fatalf("got %d flows, want 4: %v", len(fs), fs)
	}
	q, a, q2, a2 := fs[0], fs[1], fs[2], fs[3]
	for i, f := range fs {
		if f.GetType() != flowpb.FlowType_L7 || f.GetEventType().GetType() != 129 || f.GetL7().GetDns().GetObservationSource() != "loupe" ||
			f.GetVerdict() != flowpb.Verdict_FORWARDED {
			t.Errorf("flow %d: %v", i, f)
		}
	}
	if q.GetL7().GetType() != flowpb.L7FlowType_REQUEST || q.GetIsReply().GetValue() || q.GetSummary() != "DNS Query db-0.y.pod.lab. A" ||
		q.GetSource().GetPodName() != "b" || q.GetDestination().GetPodName() != "db-0" || q.GetTrafficDirection() != flowpb.TrafficDirection_EGRESS ||
		q.GetL4().GetUDP().GetDestinationPort() != 53 {
		t.Errorf("query flow: %v", q)
	}
	if a.GetL7().GetType() != flowpb.L7FlowType_RESPONSE || !a.GetIsReply().GetValue() || a.GetL7().GetLatencyNs() != 3*ms ||
		a.GetL7().GetDns().GetIps()[0] != serverPod || a.GetL7().GetDns().GetTtl() != 30 || a.GetL7().GetDns().GetRrtypes()[0] != "A" ||
		a.GetSummary() != `DNS Answer "10.0.2.20" TTL: 30 (Query db-0.y.pod.lab. A)` || a.GetTrafficDirection() != flowpb.TrafficDirection_EGRESS {
		t.Errorf("answer flow: %v", a)
	}
	if q2.GetTrafficDirection() != flowpb.TrafficDirection_INGRESS || q2.GetSource().GetIdentity() != 0 && q2.GetSource().GetPodName() != "" {
		t.Errorf("outside query: %v", q2)
	}
	if a2.GetL7().GetDns().GetRcode() != 3 || a2.GetL7().GetLatencyNs() != 10*ms ||
		a2.GetSummary() != "DNS Answer RCode: Non-Existent Domain TTL: 0 (Query nope.lab. A)" {
		t.Errorf("nxdomain: %v", a2)
	}
	if n := histogramCount(t, o.l7.dnsTime); n != 2 {
		t.Errorf("dns durations observed: %d, want 2", n)
	}
	if got := counterValue(o.l7.malformed.WithLabelValues("dns")); got != 1 {
		t.Errorf("malformed %v, want 1", got)
	}
}

func TestL7DNSTimeout(t *testing.T) {
	o, err := New(Config{NodeName: "node-1", Metadata: nil, BufferSize: 63, L7: L7Config{DNSTimeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	sec := uint64(time.Second)
	o.HandleL7(l7Rec(10*sec, clientPod, serverPod, 40000, 53, contract.DirectionEgress, dnsMsg(t, 9, "x.drop.lab.", false, 0)))
	o.ExpireL7(11 * sec)
	if n := len(ringFlows(o)); n != 1 {
		t.Fatalf("%d flows before the timeout", n)
	}
	o.ExpireL7(12 * sec)
	o.ExpireL7(20 * sec)
	fs := ringFlows(o)
	if len(fs) != 2 {
		t.Fatalf("%d flows, want query and timeout", len(fs))
	}
	f := fs[1]
	if f.GetVerdict() != flowpb.Verdict_ERROR || f.GetL7().GetType() != flowpb.L7FlowType_RESPONSE || f.GetL7().GetLatencyNs() != 2*sec ||
		f.GetIP().GetSource() != serverPod || f.GetL7().GetDns().GetQuery() != "x.drop.lab." ||
		!strings.Contains(f.GetSummary(), "no answer in 2s") || f.GetTime().AsTime().UnixNano()-fs[0].GetTime().AsTime().UnixNano() != int64(2*sec) {
		t.Fatalf("timeout flow: %v", f)
	}
	if counterValue(o.l7.timeouts) != 1 {
		t.Fatal("timeout not counted")
	}
	// Aggregated, the unanswered query is an L7 error of its edge.
	set := aggregate.NewSet()
	set.Add(f)
	if e := set.Edges()[0]; e.L7Errors != 1 || e.L7Responses != 1 || e.L7Protocol != "DNS" {
		t.Errorf("aggregate of the timeout: %d errors, %d responses, %q", e.L7Errors, e.L7Responses, e.L7Protocol)
	}
	// An answer after the timeout is still a response flow, without latency.
	o.HandleL7(l7Rec(21*sec, serverPod, clientPod, 53, 40000, contract.DirectionIngress, dnsMsg(t, 9, "x.drop.lab.", true, 0)))
	if fs = ringFlows(o); len(fs) != 3 || fs[2].GetL7().GetLatencyNs() != 0 {
		t.Fatalf("late answer: %v", fs)
	}
}

func FuzzHandleL7(f *testing.F) {
	f.Add(l7Rec(1, clientPod, serverPod, 1, 53, contract.DirectionEgress, dnsMsg(f, 5, "a.b.", false, 0)))
	f.Add(l7Rec(1, serverPod, clientPod, 53, 1, contract.DirectionIngress, dnsMsg(f, 5, "a.b.", true, 0, "10.0.0.1")))
	f.Add(httpRec(1, clientPod, serverPod, 1, 80, contract.DirectionEgress, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
	f.Add(httpRec(2, serverPod, clientPod, 80, 1, contract.DirectionIngress, "HTTP/1.1 200 OK\r\n\r\n"))
	o := newTestObserver(f, 63, nil)
	f.Fuzz(func(t *testing.T, b []byte) {
		o.HandleL7(b)
		o.ExpireL7(^uint64(0) >> 1)
	})
}

// Names a pod resolved name the L3/L4 flows to and from those addresses.
func TestL7FQDNNames(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	sec := uint64(time.Second)
	o.HandleL7(l7Rec(10*sec, clientPod, serverPod, 40000, 53, contract.DirectionEgress, dnsMsg(t, 5, "api.example.com.", false, 0)))
	o.HandleL7(l7Rec(10*sec, serverPod, clientPod, 53, 40000, contract.DirectionIngress, dnsMsg(t, 5, "api.example.com.", true, 0, world)))
	tcp := func(ts uint64, src, dst string, sport, dport uint16, dir, flags uint8) *flowpb.Flow {
		o.HandleEvent(rawEvent(evSpec{ts: ts, typ: contract.MessageTypeTrace, verdict: contract.VerdictForwarded, proto: 6,
			tcpFlags: 0x02, flags: flags, epID: 3, src: src, dst: dst, sport: sport, dport: dport, dir: dir}))
		fs := ringFlows(o)
		return fs[len(fs)-1]
	}
	f := tcp(11*sec, clientPod, world, 5555, 443, contract.DirectionEgress, datapath.FlagCTNew)
	if len(f.GetDestinationNames()) != 1 || f.GetDestinationNames()[0] != "api.example.com" || f.GetSourceNames() != nil {
		t.Fatalf("egress flow names: %v / %v", f.GetDestinationNames(), f.GetSourceNames())
	}
	// The UI names its external node by these (ui's fqdnFlows builds the same).
	if d := f.GetDestination(); d.GetPodName() != "" || !slices.Equal(d.GetLabels(), contract.ReservedLabels(contract.IdentityWorld)) || f.GetIP().GetDestination() != world {
		t.Fatalf("egress flow destination: %v %v", d, f.GetIP())
	}
	f = tcp(12*sec, world, clientPod, 443, 5555, contract.DirectionIngress, datapath.FlagReply)
	if len(f.GetSourceNames()) != 1 || f.GetDestinationNames() != nil {
		t.Fatalf("reply names: %v / %v", f.GetSourceNames(), f.GetDestinationNames())
	}
	// Another pod did not resolve it; the TTL (30 s) ends.
	if f = tcp(13*sec, "10.0.1.10", world, 5556, 443, contract.DirectionEgress, datapath.FlagCTNew); f.GetDestinationNames() != nil {
		t.Fatalf("names of another pod's lookup: %v", f.GetDestinationNames())
	}
	if f = tcp(41*sec, clientPod, world, 5557, 443, contract.DirectionEgress, datapath.FlagCTNew); f.GetDestinationNames() != nil {
		t.Fatalf("names after their TTL: %v", f.GetDestinationNames())
	}
}

func TestFQDNCacheBounded(t *testing.T) {
	c := newFQDNCache()
	for i := range maxFQDNPerPod * 3 {
		ip := netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)})
		c.learn(netip.MustParseAddr(clientPod), "n.example.", []netip.Addr{ip}, 30, 1)
	}
	for i := range maxFQDNClients * 2 {
		c.learn(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), "n.example.", []netip.Addr{netip.MustParseAddr(world)}, 30, 1)
	}
	if len(c.clients) > maxFQDNClients {
		t.Fatalf("%d clients", len(c.clients))
	}
	for _, m := range c.clients {
		if len(m) > maxFQDNPerPod {
			t.Fatalf("%d addresses for one pod", len(m))
		}
	}
}

func histogramCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func httpRec(ts uint64, src, dst string, sport, dport uint16, dir uint8, data string) []byte {
	return mustL7(&datapath.L7Record{TimestampNS: ts, Ifindex: 7, EndpointID: 3,
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport,
		Proto: 6, Kind: datapath.L7HTTP, Direction: dir, PayloadLen: uint32(len(data)), Data: []byte(data)})
}

func TestL7HTTPFlows(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	ms := uint64(time.Millisecond)
	eg, in := contract.DirectionEgress, contract.DirectionIngress
	// Two pipelined requests on one keep-alive connection, answered in order.
	o.HandleL7(httpRec(1000*ms, clientPod, serverPod, 40000, 8080, eg, "GET /status/500?secret=1 HTTP/1.1\r\nHost: db:8080\r\nCookie: c=1\r\n\r\n"))
	o.HandleL7(httpRec(1001*ms, clientPod, serverPod, 40000, 8080, eg, "POST /delay/200 HTTP/1.1\r\nHost: db:8080\r\n\r\n"))
	o.HandleL7(httpRec(1005*ms, serverPod, clientPod, 8080, 40000, in, "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\r\n"))
	o.HandleL7(httpRec(1250*ms, serverPod, clientPod, 8080, 40000, in, "HTTP/1.1 200 OK\r\n\r\n"))
	// The server pod's veth leaves them to the client's.
	o.HandleL7(httpRec(1000*ms, clientPod, serverPod, 40000, 8080, in, "GET /status/500 HTTP/1.1\r\n\r\n"))
	// Not HTTP after all.
	o.HandleL7(httpRec(1300*ms, clientPod, serverPod, 40001, 8080, eg, "GET nonsense\r\n"))
	fs := ringFlows(o)
	if len(fs) != 4 {
		t.Fatalf("%d flows, want 4: %v", len(fs), fs)
	}
	req, resp, resp2 := fs[0], fs[2], fs[3]
	h := req.GetL7().GetHttp()
	if req.GetL7().GetType() != flowpb.L7FlowType_REQUEST || h.GetMethod() != "GET" || h.GetUrl() != "http://db:8080/status/500" ||
		h.GetProtocol() != "HTTP/1.1" || len(h.GetHeaders()) != 1 || h.GetHeaders()[0].GetKey() != "Host" ||
		req.GetSummary() != "HTTP/1.1 GET http://db:8080/status/500" || req.GetEventType().GetType() != 129 || req.GetType() != flowpb.FlowType_L7 {
		t.Errorf("request: %v", req)
	}
	h = resp.GetL7().GetHttp()
	if resp.GetL7().GetType() != flowpb.L7FlowType_RESPONSE || h.GetCode() != 500 || h.GetMethod() != "GET" || h.GetUrl() != "http://db:8080/status/500" ||
		resp.GetL7().GetLatencyNs() != 5*ms || !resp.GetIsReply().GetValue() || resp.GetSummary() != "HTTP/1.1 500 5ms (GET http://db:8080/status/500)" {
		t.Errorf("response: %v", resp)
	}
	if h = resp2.GetL7().GetHttp(); h.GetMethod() != "POST" || h.GetCode() != 200 || resp2.GetL7().GetLatencyNs() != 249*ms {
		t.Errorf("second response: %v", resp2)
	}
	if got := counterValue(o.l7.malformed.WithLabelValues("http")); got != 1 {
		t.Errorf("malformed %v", got)
	}
}

func TestL7HTTPKeepQuery(t *testing.T) {
	o, err := New(Config{NodeName: "n", BufferSize: 63, L7: L7Config{KeepQuery: true}})
	if err != nil {
		t.Fatal(err)
	}
	o.HandleL7(httpRec(1, clientPod, serverPod, 40000, 80, contract.DirectionEgress, "GET /a?b=c HTTP/1.0\r\n\r\n"))
	if u := ringFlows(o)[0].GetL7().GetHttp().GetUrl(); u != "http://10.0.2.20:80/a?b=c" {
		t.Fatalf("url %q", u)
	}
}

// Two rings feed the flow ring: a flow that arrives after a newer one is
// moved forward, so the stream stays in time order; latency does not move.
func TestL7FlowsKeepStreamOrder(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	ms := uint64(time.Millisecond)
	o.HandleEvent(rawEvent(evSpec{ts: 1005 * ms, typ: contract.MessageTypeTrace, verdict: contract.VerdictForwarded, proto: 17,
		flags: datapath.FlagCTNew, epID: 3, src: clientPod, dst: serverPod, sport: 40000, dport: 53, dir: contract.DirectionEgress}))
	o.HandleL7(l7Rec(1000*ms, clientPod, serverPod, 40000, 53, contract.DirectionEgress, dnsMsg(t, 5, "a.b.", false, 0)))
	o.HandleL7(l7Rec(1002*ms, serverPod, clientPod, 53, 40000, contract.DirectionIngress, dnsMsg(t, 5, "a.b.", true, 0)))
	// An event stamped before the L7 flows, read after them.
	o.HandleEvent(rawEvent(evSpec{ts: 1001 * ms, typ: contract.MessageTypeTrace, verdict: contract.VerdictForwarded, proto: 17,
		flags: datapath.FlagReply, epID: 3, src: serverPod, dst: clientPod, sport: 53, dport: 40000, dir: contract.DirectionIngress}))
	fs := ringFlows(o)
	for i := 1; i < len(fs); i++ {
		if fs[i].GetTime().AsTime().Before(fs[i-1].GetTime().AsTime()) {
			t.Fatalf("flow %d older than flow %d", i, i-1)
		}
	}
	if fs[2].GetL7().GetLatencyNs() != 2*ms {
		t.Fatalf("latency %d", fs[2].GetL7().GetLatencyNs())
	}
}

// Pipelined requests sent in one segment, and their responses in one
// segment, pair in order: datapath's TestPrivilegedL7HTTPPipelinedCapture
// captures such a segment whole from a real packet.
func TestL7HTTPPipelinedInOneSegment(t *testing.T) {
	o := newTestObserver(t, 63, nil)
	ms := uint64(time.Millisecond)
	eg, in := contract.DirectionEgress, contract.DirectionIngress
	o.HandleL7(httpRec(1000*ms, clientPod, serverPod, 40000, 8080, eg, pipelinedRequests))
	o.HandleL7(httpRec(1004*ms, serverPod, clientPod, 8080, 40000, in,
		"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	fs := ringFlows(o)
	if len(fs) != 4 {
		t.Fatalf("%d flows, want 4: %v", len(fs), fs)
	}
	for i, want := range []string{"GET http://db:8080/status/500", "GET http://db:8080/ok", "500 GET http://db:8080/status/500", "200 GET http://db:8080/ok"} {
		h := fs[i].GetL7().GetHttp()
		got := h.GetMethod() + " " + h.GetUrl()
		if h.GetCode() != 0 {
			got = strconv.Itoa(int(h.GetCode())) + " " + got
		}
		if got != want {
			t.Errorf("flow %d: %s, want %s", i, got, want)
		}
	}
	if fs[3].GetL7().GetLatencyNs() != 4*ms {
		t.Errorf("second response latency %d", fs[3].GetL7().GetLatencyNs())
	}
}

// pipelinedRequests are two GETs in one segment.
const pipelinedRequests = "GET /status/500 HTTP/1.1\r\nHost: db:8080\r\n\r\nGET /ok HTTP/1.1\r\nHost: db:8080\r\n\r\n"
