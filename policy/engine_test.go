package policy

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// memDatapath is an in-memory policy map, ipcache and conntrack table. The
// engine under test is real; this stands in for the kernel maps, and calls
// step after every single write so a test can check every intermediate state.
type memDatapath struct {
	policy  map[datapath.PolicyKey]datapath.PolicyEntry
	ipcache map[netip.Prefix]uint32
	ct      []datapath.CTEntry
	step    func()
	// capacity, when set, refuses a new key past it as the kernel's
	// LPM trie does (ENOSPC: TestPrivilegedPolicyMapMemory).
	capacity int
}

func newMemDatapath() *memDatapath {
	return &memDatapath{policy: map[datapath.PolicyKey]datapath.PolicyEntry{}, ipcache: map[netip.Prefix]uint32{}}
}

func (d *memDatapath) after() {
	if d.step != nil {
		d.step()
	}
}

func (d *memDatapath) UpsertPolicy(k datapath.PolicyKey, e datapath.PolicyEntry) error {
	if err := k.Validate(); err != nil {
		return err // the kernel map could not hold it either
	}
	if _, ok := d.policy[k]; !ok && d.capacity > 0 && len(d.policy) >= d.capacity {
		return fmt.Errorf("upsert policy %+v: map full (%d entries)", k, d.capacity)
	}
	d.policy[k] = e
	d.after()
	return nil
}

func (d *memDatapath) UpsertPolicies(ks []datapath.PolicyKey, es []datapath.PolicyEntry) error {
	for i := range ks {
		if err := d.UpsertPolicy(ks[i], es[i]); err != nil {
			return err
		}
	}
	return nil
}

func (d *memDatapath) DeletePolicy(k datapath.PolicyKey) error {
	delete(d.policy, k)
	d.after()
	return nil
}

func (d *memDatapath) Policy() (map[datapath.PolicyKey]datapath.PolicyEntry, error) {
	return maps.Clone(d.policy), nil
}

func (d *memDatapath) UpsertIPCache(p netip.Prefix, id uint32) error {
	d.ipcache[p] = id
	d.after()
	return nil
}

func (d *memDatapath) DeleteIPCache(p netip.Prefix) error {
	delete(d.ipcache, p)
	d.after()
	return nil
}

func (d *memDatapath) LookupIPCache(a netip.Addr) (uint32, bool) {
	id := IPCacheLookup(d.ipcache, a)
	return id, id != contract.IdentityWorld
}

func (d *memDatapath) IPCache() (map[netip.Prefix]uint32, error) { return maps.Clone(d.ipcache), nil }

func (d *memDatapath) DeleteConntrack(drop func(datapath.CTEntry) bool) (int, error) {
	var keep []datapath.CTEntry
	n := 0
	for _, e := range d.ct {
		if drop(e) {
			n++
		} else {
			keep = append(keep, e)
		}
	}
	d.ct = keep
	return n, nil
}

// memEndpoints is a node's endpoint table: it writes its pods' ipcache
// entries and its gateway, as the agent does.
type memEndpoints struct {
	dp   *memDatapath
	cidr netip.Prefix
	eps  map[uint32]*EndpointState
	ips  map[uint32]netip.Addr
}

func (t *memEndpoints) PolicyEndpoints() []EndpointState {
	var out []EndpointState
	for _, e := range t.eps {
		out = append(out, *e)
	}
	return out
}

func (t *memEndpoints) SetEndpointPolicy(want map[uint32]EndpointPolicy) error {
	for id, p := range want {
		e := t.eps[id]
		if e == nil {
			continue
		}
		// The agent writes the endpoint (identity and flags together), then the ipcache.
		e.Identity, e.Flags = p.Identity, p.Flags
		t.dp.after()
		ip := t.ips[id]
		t.dp.ipcache[netip.PrefixFrom(ip, 32)] = p.Identity
		t.dp.after()
	}
	return nil
}

func (t *memEndpoints) OwnsPrefix(p netip.Prefix) bool {
	return p.Bits() >= t.cidr.Bits() && t.cidr.Contains(p.Addr())
}

type memNode struct {
	dp  *memDatapath
	eps *memEndpoints
	eng *Engine
}

func newMemNodes(t *testing.T, c *testCluster) map[string]*memNode {
	nodes := map[string]*memNode{}
	for n := 1; n <= 2; n++ {
		name := fmt.Sprintf("node%d", n)
		dp := newMemDatapath()
		cidr := netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/24", n))
		dp.ipcache[netip.PrefixFrom(cidr.Addr().Next(), 32)] = contract.IdentityHost
		eps := &memEndpoints{dp: dp, cidr: cidr, eps: map[uint32]*EndpointState{}, ips: map[uint32]netip.Addr{}}
		for i, p := range c.snap.Pods {
			if p.Spec.NodeName != name {
				continue
			}
			id := uint32(10 + i)
			eps.eps[id] = &EndpointState{ID: id, Ifindex: 1000 + id, Namespace: p.Namespace, Name: p.Name, Identity: contract.IdentityInit}
			eps.ips[id] = netip.MustParseAddr(p.Status.PodIP)
			dp.ipcache[netip.PrefixFrom(eps.ips[id], 32)] = contract.IdentityInit
		}
		nodes[name] = &memNode{dp: dp, eps: eps, eng: NewEngine(EngineConfig{Node: name, Datapath: dp, Endpoints: eps})}
	}
	return nodes
}

// verdict evaluates a new connection on the nodes' current maps.
func memVerdict(nodes map[string]*memNode, c *testCluster, from, to string, pp portProto) bool {
	find := func(pod string) (*memNode, *EndpointState, netip.Addr) {
		for _, n := range nodes {
			for _, e := range n.eps.eps {
				if e.Namespace+"/"+e.Name == pod {
					return n, e, n.eps.ips[e.ID]
				}
			}
		}
		panic(pod)
	}
	sn, se, sip := find(from)
	dn, de, dip := find(to)
	proto, _ := ParseProto(pp.proto)
	if se.Flags.Egress && !Lookup(sn.dp.policy, se.ID, IPCacheLookup(sn.dp.ipcache, dip), uint16(pp.port), uint8(proto), contract.DirectionEgress).Allowed {
		return false
	}
	if de.Flags.Ingress && !Lookup(dn.dp.policy, de.ID, IPCacheLookup(dn.dp.ipcache, sip), uint16(pp.port), uint8(proto), contract.DirectionIngress).Allowed {
		return false
	}
	return true
}

func scenarioSnapshot(t *testing.T, sc scenario, gen int) *metadata.Snapshot {
	c := newTestCluster(t, "")
	c.apply(t, sc.policies(c.ip, testCIDR16)+sc.mutate)
	c.snap.Generation = fmt.Sprint(gen)
	return c.snap
}

// Going from every scenario to the next on live maps: after each single
// map write, every connection that both the old and the new policy allow
// still passes; at the end the maps give the new table exactly; the
// second apply of the same snapshot writes nothing.
func TestEngineTransitionsNeverDropAllowedTraffic(t *testing.T) {
	c := newTestCluster(t, "")
	nodes := newMemNodes(t, c)
	pods := modelPods()
	var prev *reach
	for i, sc := range scenarios {
		snap := scenarioSnapshot(t, sc, i+1)
		var bad []string
		check := func() {
			if prev == nil {
				return
			}
			for _, from := range pods {
				for _, to := range pods {
					if from == to {
						continue
					}
					for _, pp := range modelPorts {
						if prev.expected(from, to, pp) && sc.expect.expected(from, to, pp) && !memVerdict(nodes, c, from, to, pp) {
							bad = append(bad, fmt.Sprintf("%s -> %s %s", from, to, pp))
						}
					}
				}
			}
		}
		for _, n := range nodes {
			n.dp.step = check
		}
		for _, name := range []string{"node1", "node2"} {
			if _, err := nodes[name].eng.Apply(snap); err != nil {
				t.Fatal(err)
			}
		}
		if len(bad) > 0 {
			t.Errorf("%s: during the change to it, connections allowed before and after were denied: %s", sc.name, strings.Join(bad[:min(len(bad), 10)], "; "))
		}
		for _, n := range nodes {
			n.dp.step = nil
		}
		got := map[cell]bool{}
		for _, from := range pods {
			for _, to := range pods {
				for _, pp := range modelPorts {
					got[cell{from, to, pp}] = from == to || memVerdict(nodes, c, from, to, pp)
				}
			}
		}
		if d := diffTables(sc.expect, got); d != "" {
			t.Errorf("%s: maps after the change:\n%s", sc.name, d)
		}
		for name, n := range nodes {
			st, err := n.eng.Apply(snap)
			if err != nil {
				t.Fatal(err)
			}
			if st.Upserted+st.Deleted+st.IPCacheSet+st.IPCacheDel+st.EndpointsSet != 0 {
				t.Errorf("%s: %s: second apply changed things: %+v", sc.name, name, st)
			}
		}
		prev = sc.expect
	}
}

// Conntrack entries of connections the new policy denies are removed, the
// others stay.
func TestEngineFlushesDeniedConnections(t *testing.T) {
	c := newTestCluster(t, "")
	nodes := newMemNodes(t, c)
	for _, n := range nodes {
		if _, err := n.eng.Apply(c.snap); err != nil {
			t.Fatal(err)
		}
	}
	// Every pod has a connection to and from every other, on 80/TCP and 81/UDP.
	type conn struct{ from, to, port string }
	for _, n := range nodes {
		for _, e := range n.eps.eps {
			ip := n.eps.ips[e.ID]
			for _, other := range c.snap.Pods {
				oip := netip.MustParseAddr(other.Status.PodIP)
				if oip == ip {
					continue
				}
				for _, pp := range []struct {
					port  uint16
					proto uint8
				}{{80, 6}, {81, 17}} {
					n.dp.ct = append(n.dp.ct,
						datapath.CTEntry{Ifindex: e.Ifindex, Proto: pp.proto, Src: ip, Dst: oip, SrcPort: 40000, DstPort: pp.port, Direction: contract.DirectionEgress},
						datapath.CTEntry{Ifindex: e.Ifindex, Proto: pp.proto, Src: oip, Dst: ip, SrcPort: 40000, DstPort: pp.port, Direction: contract.DirectionIngress})
				}
			}
		}
	}
	before := map[string]int{}
	for name, n := range nodes {
		before[name] = len(n.dp.ct)
	}
	// x/a accepts only 80/TCP from y; x/b sends nothing.
	c.apply(t, np("x", "y-on-80", `podSelector: {matchLabels: {pod: a}}
ingress:
- from:
  - namespaceSelector: {matchLabels: {ns: "y"}}
  ports:
  - {port: 80, protocol: TCP}`)+np("x", "b-no-egress", `podSelector: {matchLabels: {pod: b}}
policyTypes: [Egress]`))
	c.snap.Generation = "2"
	removed := 0
	for _, n := range nodes {
		st, err := n.eng.Apply(c.snap)
		if err != nil {
			t.Fatal(err)
		}
		removed += st.ConntrackDeleted
		for _, ct := range n.dp.ct {
			var pod string
			for _, e := range n.eps.eps {
				if e.Ifindex == ct.Ifindex {
					pod = e.Namespace + "/" + e.Name
				}
			}
			peer := c.snap.Pods[0]
			for _, p := range c.snap.Pods {
				if ip := netip.MustParseAddr(p.Status.PodIP); ip == ct.Src && ct.Direction == contract.DirectionIngress || ip == ct.Dst && ct.Direction == contract.DirectionEgress {
					peer = p
				}
			}
			if pod == "x/b" && ct.Direction == contract.DirectionEgress {
				t.Errorf("x/b egress connection kept: %+v", ct)
			}
			if pod == "x/a" && ct.Direction == contract.DirectionIngress && (peer.Namespace != "y" || ct.DstPort != 80 || ct.Proto != 6) {
				t.Errorf("x/a ingress connection from %s/%s %d/%d kept", peer.Namespace, peer.Name, ct.DstPort, ct.Proto)
			}
		}
	}
	// x/b: 8 peers x 2 ports egress; x/a: 8 peers x 2 ports ingress, minus y's three on 80/TCP.
	if want := 8*2 + 8*2 - 3; removed != want {
		t.Errorf("removed %d conntrack entries, want %d", removed, want)
	}
	// A reply in flight re-creates a cut connection the other way round
	// (the pod "opening" it to the peer's port): flushing again removes it,
	// and leaves other connections alone.
	var xa *memNode
	var xaEP *EndpointState
	for _, n := range nodes {
		for _, e := range n.eps.eps {
			if e.Namespace == "x" && e.Name == "a" {
				xa, xaEP = n, e
			}
		}
	}
	ip := xa.eps.ips[xaEP.ID]
	zc := netip.MustParseAddr(c.ip("z/c"))
	recreated := datapath.CTEntry{Ifindex: xaEP.Ifindex, Proto: 6, Src: ip, Dst: zc, SrcPort: 80, DstPort: 40000, Direction: contract.DirectionEgress}
	legit := datapath.CTEntry{Ifindex: xaEP.Ifindex, Proto: 6, Src: ip, Dst: zc, SrcPort: 41000, DstPort: 80, Direction: contract.DirectionEgress}
	xa.dp.ct = append(xa.dp.ct, recreated, legit)
	n, err := xa.eng.flushCut()
	if err != nil || n != 1 {
		t.Fatalf("flush again: %d removed, %v", n, err)
	}
	if last := xa.dp.ct[len(xa.dp.ct)-1]; last != legit {
		t.Errorf("flush again removed the wrong entry; left %+v", last)
	}
}

// An invalid policy is logged once (not on every apply), listed for the
// metric, and enforced fail-closed on the live maps.
func TestEngineReportsInvalidPolicy(t *testing.T) {
	c := newTestCluster(t, np("x", "bad", `podSelector: {matchLabels: {pod: a}}
ingress:
- ports:
  - {protocol: tcp, port: 80}`))
	nodes := newMemNodes(t, c)
	var logs bytes.Buffer
	for _, n := range nodes {
		n.eng.log = slog.New(slog.NewTextHandler(&logs, nil))
		for range 2 {
			if _, err := n.eng.Apply(c.snap); err != nil {
				t.Fatal(err)
			}
		}
		inv := n.eng.InvalidPolicies()
		if len(inv) != 1 || inv[0].Ref.Namespace != "x" || inv[0].Ref.Name != "bad" || !strings.Contains(inv[0].Err.Error(), `Unsupported value: "tcp"`) {
			t.Errorf("invalid policies: %v", inv)
		}
	}
	if got := strings.Count(logs.String(), "invalid network policy enforced fail-closed"); got != len(nodes) {
		t.Errorf("%d log lines, want one per node:\n%s", got, logs.String())
	}
	if !strings.Contains(logs.String(), "namespace=x name=bad") {
		t.Errorf("log does not name the policy:\n%s", logs.String())
	}
	if memVerdict(nodes, c, "y/b", "x/a", portProto{80, "TCP"}) {
		t.Error("y/b -> x/a:80 allowed under an invalid policy selecting x/a")
	}
	// Fixed: the list empties.
	c.snap.NetworkPolicies = nil
	for _, n := range nodes {
		if _, err := n.eng.Apply(c.snap); err != nil {
			t.Fatal(err)
		}
		if inv := n.eng.InvalidPolicies(); len(inv) != 0 {
			t.Errorf("after removal: %v", inv)
		}
	}
	if !memVerdict(nodes, c, "y/b", "x/a", portProto{80, "TCP"}) {
		t.Error("y/b -> x/a:80 denied with no policy")
	}
}
