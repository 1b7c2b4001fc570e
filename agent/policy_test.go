package agent

import (
	"net/netip"
	"testing"
)

// The policy engine's identity function is used on Register, and
// SetEndpointPolicy writes identity and flags to the endpoint map, the
// ipcache and the state file; re-registering keeps the flags and a
// restart restores them.
func TestSetEndpointPolicy(t *testing.T) {
	f := newFixture(t)
	f.a.SetIdentityFunc(func(ns, name string) uint32 { return 4242 })
	select {
	case <-f.a.EndpointsChanged():
		t.Fatal("change signalled before any change")
	default:
	}
	al := f.allocate(t, "c1", "eth0")
	ep := f.register(t, "c1", "eth0", 7, al)
	if ep.Identity != 4242 {
		t.Fatalf("identity %d, want the installed function's", ep.Identity)
	}
	select {
	case <-f.a.EndpointsChanged():
	default:
		t.Fatal("register did not signal a change")
	}
	if err := f.a.SetEndpointPolicy(map[uint32]EndpointPolicy{ep.Id: {Identity: 999, Ingress: true}, 12345: {Identity: 1}}); err != nil {
		t.Fatal(err)
	}
	got := f.dp.eps[7]
	if got.Identity != 999 || !got.PolicyIngress || got.PolicyEgress {
		t.Fatalf("endpoint map %+v", got)
	}
	if id := f.dp.ipc[netip.PrefixFrom(netip.MustParseAddr(al.Ipv4), 32)]; id != 999 {
		t.Fatalf("ipcache identity %d", id)
	}
	// Registering again keeps the enforcement: its entries are keyed by the same id.
	f.register(t, "c1", "eth0", 7, al)
	if got := f.dp.eps[7]; !got.PolicyIngress || got.Identity != 4242 {
		t.Fatalf("after re-register %+v", got)
	}
	if err := f.a.SetEndpointPolicy(map[uint32]EndpointPolicy{ep.Id: {Identity: 999, Ingress: true, Egress: true}}); err != nil {
		t.Fatal(err)
	}
	before := f.dp.upserts
	if err := f.a.SetEndpointPolicy(map[uint32]EndpointPolicy{ep.Id: {Identity: 999, Ingress: true, Egress: true}}); err != nil {
		t.Fatal(err)
	}
	if f.dp.upserts != before {
		t.Errorf("an unchanged policy rewrote the endpoint")
	}
	f.restart(t)
	if got := f.dp.eps[7]; got.Identity != 999 || !got.PolicyIngress || !got.PolicyEgress {
		t.Fatalf("after restart %+v", got)
	}
	// A failing write leaves the previous state.
	f.dp.failPut = true
	if err := f.a.SetEndpointPolicy(map[uint32]EndpointPolicy{ep.Id: {Identity: 7}}); err == nil {
		t.Fatal("no error from a failing datapath")
	}
	f.dp.failPut = false
	if eps := f.a.Endpoints(); eps[0].Identity != 999 || !eps[0].PolicyEgress {
		t.Fatalf("table after a failed write %+v", eps[0])
	}
}
