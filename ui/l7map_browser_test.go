package ui

import (
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// dnsExchange is a DNS query and its answer as loupe's observer emits
// them at the client's veth: observer's TestL7DNSFlows builds the same
// from L7 records, test/e2e's TestPrivilegedL7DNS from the real datapath
// (type L7, event type 129, UDP, the answer a reply carrying the query,
// its rcode and the latency).
func dnsExchange(client, server *flowpb.Endpoint, sport uint32, at time.Time, query string, rcode uint32, latency time.Duration) []*flowpb.Flow {
	base := func(src, dst *flowpb.Endpoint, s, d uint32, t time.Time, reply bool) *flowpb.Flow {
		return l7Flow(src, dst, "10.0.0.1", "10.0.3.53", &flowpb.Layer4{Protocol: &flowpb.Layer4_UDP{UDP: &flowpb.UDP{SourcePort: s, DestinationPort: d}}}, t, reply)
	}
	req := base(client, server, sport, 53, at, false)
	req.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_REQUEST, Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: query, Qtypes: []string{"A"}, ObservationSource: "loupe"}}}
	resp := base(server, client, 53, sport, at.Add(latency), true)
	resp.L7 = &flowpb.Layer7{Type: flowpb.L7FlowType_RESPONSE, LatencyNs: uint64(latency),
		Record: &flowpb.Layer7_Dns{Dns: &flowpb.DNS{Query: query, Qtypes: []string{"A"}, Rcode: rcode, ObservationSource: "loupe"}}}
	return []*flowpb.Flow{req, resp}
}

// l7MapFlows: the HTTP of l7Flows (10 % 5xx, p99 about 200 ms), 40 DNS
// lookups client -> dns of which one NXDOMAIN (2.5 %, 3 ms), and the
// connections of fqdnFlows to api.example.com and to an unnamed address.
func l7MapFlows(now time.Time) []*flowpb.Flow {
	out := l7Flows(now)
	client, dns := pod("x", "client-1", "client"), pod("x", "dns-0", "dns")
	for i := range 40 {
		var rcode uint32
		if i == 7 {
			rcode = 3
		}
		out = append(out, dnsExchange(client, dns, uint32(50000+i), now.Add(-10*time.Second+time.Duration(i)*250*time.Millisecond),
			"web.x.svc.lab.", rcode, 3*time.Millisecond)...)
	}
	return append(append(out, fqdnFlows(now)...), serviceFlows(now)...)
}

// serviceFlows are connections client -> web2 through the Service x/web2
// (ClusterIP translated by the datapath: the backend pod and the Service
// in the flow, as TestAggregatorEdgeNamesItsService says), without L7.
func serviceFlows(now time.Time) []*flowpb.Flow {
	client, web2 := pod("x", "client-1", "client"), pod("x", "web2-0", "web2")
	var out []*flowpb.Flow
	for i := range 3 {
		f := tcpFlow(client, web2, uint32(47000+i), 8080, flowpb.Verdict_FORWARDED, i)
		f.Time = timestamppb.New(now.Add(-time.Second + time.Duration(i)*time.Millisecond))
		f.DestinationService = &flowpb.Service{Name: "web2", Namespace: "x"}
		r := reply(f)
		r.SourceService = &flowpb.Service{Name: "web2", Namespace: "x"}
		out = append(out, f, r)
	}
	return out
}

// TestBrowserL7EdgeLabels: in chromium, each edge with L7 carries a label
// on the canvas (protocol, request rate, error rate, p50/p99), an edge
// through a Service names it; the colour
// modes by L7 error rate and by L7 latency colour the edges and show their
// legend, and come from and go to the URL; the external destination the
// client resolved is a map node named api.example.com.
func TestBrowserL7EdgeLabels(t *testing.T) {
	web := needBrowser(t)
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	a.Add(l7MapFlows(time.Now())...)
	_, addr := startUI(t, startRelay(t, a))
	var res map[string]any
	runNode(t, web, "l7map.mjs", map[string]string{
		"LOUPE_UI_URL": "http://" + addr + "/",
		"LOUPE_UI_L7MAP": mustMarshal(t, map[string]any{
			"http": []string{"x/client", "x/web"}, "dns": []string{"x/client", "x/dns"},
			"fqdn": []string{"x/client", "api.example.com"}, "svc": []string{"x/client", "x/web2"},
			"screenshot": screenshotPath(t, "ui-l7map.png"),
		}),
	}, &res)
	if res["ok"] != true {
		t.Fatalf("l7 map check: %v", res)
	}
	t.Logf("labels: HTTP %v; DNS %v; colours %v; FQDN node %v; url %v; screenshot %v", res["httpLabel"], res["dnsLabel"], res["colors"], res["fqdnNode"], res["url"], res["screenshot"])
}
