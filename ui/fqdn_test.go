package ui

import (
	"slices"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/loupe-project/loupe/contract"
)

// worldEndpoint is an address outside the cluster as the observer's
// decoder reports it: no pod, the reserved world labels.
func worldEndpoint() *flowpb.Endpoint {
	return &flowpb.Endpoint{Labels: contract.ReservedLabels(contract.IdentityWorld)}
}

// fqdnFlows: client -> 192.0.2.1:443, which the client resolved as
// api.example.com, and its replies: the flows carry destination_names and,
// on the replies, source_names, as observer's TestL7FQDNNames produces
// them from a DNS answer and the connection's packets, and e2e's
// TestPrivilegedL7DNS from a real lookup and dial. Then client ->
// 198.51.100.7:443, which nobody resolved.
func fqdnFlows(now time.Time) []*flowpb.Flow {
	client := pod("x", "client-1", "client")
	var out []*flowpb.Flow
	for i := range 5 {
		f := tcpFlow(client, worldEndpoint(), uint32(45000+i), 443, flowpb.Verdict_FORWARDED, i)
		f.IP.Destination = "192.0.2.1"
		f.DestinationNames = []string{"api.example.com"}
		f.Time = timestamppb.New(now.Add(-time.Second + time.Duration(i)*time.Millisecond))
		r := reply(f)
		r.DestinationNames, r.SourceNames = nil, []string{"api.example.com"}
		out = append(out, f, r)
	}
	f := tcpFlow(client, worldEndpoint(), 46000, 443, flowpb.Verdict_FORWARDED, 9)
	f.IP.Destination = "198.51.100.7"
	f.Time = timestamppb.New(now.Add(-time.Second))
	return append(out, f)
}

func TestExternalNodesByFQDN(t *testing.T) {
	a := NewAggregator(AggregatorConfig{})
	for _, f := range fqdnFlows(time.Now()) {
		a.Add(f)
	}
	d := a.Flush()
	if got, want := nodeIDs(d), []string{"api.example.com", "world", "x/client"}; !slices.Equal(got, want) {
		t.Fatalf("nodes %v, want %v", got, want)
	}
	// Requests and replies make one edge to the named node.
	e := edgeByID(t, d, "x/client|api.example.com|443/TCP")
	if e.Flows != 10 {
		t.Errorf("named edge: %d flows, want 10", e.Flows)
	}
	edgeByID(t, d, "x/client|world|443/TCP")
	for _, n := range d.Nodes {
		switch n.ID {
		case "api.example.com":
			if n.Name != "api.example.com" || n.Kind != KindWorld || n.Namespace != "" || !slices.Equal(n.IPs, []string{"192.0.2.1"}) {
				t.Errorf("named node %+v", n)
			}
		case "world":
			if !slices.Equal(n.IPs, []string{"198.51.100.7"}) {
				t.Errorf("world node keeps the unnamed address only: %+v", n)
			}
		}
	}
}

// Names never rename a pod, and names that are not host names (one label,
// a slash, spaces) leave the address in the world node.
func TestExternalNameChoice(t *testing.T) {
	for _, c := range []struct {
		names []string
		want  string
	}{
		{nil, ""},
		{[]string{"b.example.com", "a.example.com"}, "a.example.com"},
		{[]string{"world"}, ""},
		{[]string{"host"}, ""},
		{[]string{"x/client"}, ""},
		{[]string{"a b.example"}, ""},
		{[]string{".example.com"}, ""},
		{[]string{"example."}, ""},
		{[]string{"bad/name.com", "_svc.example.org"}, "_svc.example.org"},
	} {
		if got := externalName(c.names); got != c.want {
			t.Errorf("externalName(%q) = %q, want %q", c.names, got, c.want)
		}
	}
	a := NewAggregator(AggregatorConfig{})
	f := tcpFlow(pod("x", "client-1", "client"), pod("y", "db-0", "db"), 40000, 5432, flowpb.Verdict_FORWARDED, 0)
	f.DestinationNames = []string{"db.y.svc.lab"}
	a.Add(f)
	f = tcpFlow(pod("x", "client-1", "client"), worldEndpoint(), 40001, 80, flowpb.Verdict_FORWARDED, 1)
	f.DestinationNames = []string{"world"}
	a.Add(f)
	if got, want := nodeIDs(a.Flush()), []string{"world", "x/client", "y/db"}; !slices.Equal(got, want) {
		t.Errorf("nodes %v, want %v", got, want)
	}
}
