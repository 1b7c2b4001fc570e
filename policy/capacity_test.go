package policy

import (
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/loupe-project/loupe/metadata"
)

// wideIngress is n policies on namespace ns, each allowing one TCP port
// from every pod of every namespace: many entries per local endpoint.
func wideIngress(ns string, n, port int) string {
	var b strings.Builder
	for i := range n {
		b.WriteString(np(ns, fmt.Sprintf("wide%d", i), fmt.Sprintf(`podSelector: {}
ingress:
- from:
  - namespaceSelector: {}
  ports:
  - {port: %d, protocol: TCP}`, port+i)))
	}
	return b.String()
}

func snapWith(t *testing.T, gen string, docs string) *metadata.Snapshot {
	c := newTestCluster(t, docs)
	c.snap.Generation = gen
	return c.snap
}

// entriesOn is how many policy map entries node1 needs for snap.
func entriesOn(t *testing.T, snap *metadata.Snapshot) int {
	m := NewModel(snap)
	var locals []LocalEndpoint
	for i, p := range m.Pods() {
		if p.Spec.NodeName == "node1" {
			locals = append(locals, LocalEndpoint{ID: uint32(i + 1), Namespace: p.Namespace, Name: p.Name})
		}
	}
	return NewCompiler("node1").Compile(m, locals).NumEntries()
}

// A policy set that needs more entries than the map holds is refused
// whole: nothing of it is written, the previous policy stays enforced,
// Refused says why, and an endpoint that came after the last policy that
// fit is isolated as the refused policy says (fail-closed), not left open.
// A set that fits afterwards is applied and clears the refusal.
func TestEngineRefusesPolicyThatDoesNotFit(t *testing.T) {
	c := newTestCluster(t, "")
	nodes := newMemNodes(t, c)
	n := nodes["node1"]
	small := snapWith(t, "1", np("x", "deny-ingress", "podSelector: {}"))
	big := snapWith(t, "2", wideIngress("y", 40, 1000))
	nSmall, nBig := entriesOn(t, small), entriesOn(t, big)
	if nBig <= 2*nSmall {
		t.Fatalf("test needs a larger policy set: %d vs %d entries", nBig, nSmall)
	}
	capacity := nBig - 1
	n.dp.capacity = capacity
	// One pod of y registers only after the small policy is in.
	var late *EndpointState
	for id, e := range n.eps.eps {
		if e.Namespace == "y" {
			late = e
			delete(n.eps.eps, id)
			break
		}
	}
	eng := NewEngine(EngineConfig{Node: "node1", Datapath: n.dp, Endpoints: n.eps, PolicyCapacity: capacity})
	if _, err := eng.Apply(small); err != nil {
		t.Fatal(err)
	}
	before := maps.Clone(n.dp.policy)
	n.eps.eps[late.ID] = late
	if late.Flags.Ingress {
		t.Fatal("late pod enforced before the refused apply")
	}

	_, err := eng.Apply(big)
	var ce *CapacityError
	if !errors.As(err, &ce) || ce.Entries != nBig || ce.Capacity != capacity || ce.Generation != "2" {
		t.Fatalf("apply of %d entries into %d: %v", nBig, capacity, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("needs %d policy map entries, the map holds %d", nBig, capacity)) {
		t.Fatalf("message: %v", err)
	}
	if r := eng.Refused(); r == nil || r.Entries != nBig {
		t.Fatalf("Refused() = %+v", r)
	}
	if !maps.Equal(n.dp.policy, before) {
		t.Fatalf("refused apply wrote the policy map: %d entries, had %d", len(n.dp.policy), len(before))
	}
	// x/* stays isolated by the old policy; the late y pod is isolated
	// as the refused policy would (it has no entries: nothing reaches it).
	if !late.Flags.Ingress {
		t.Fatal("late pod left open by the refusal")
	}
	lateName := late.Namespace + "/" + late.Name
	for _, from := range []string{"x/a", "z/c"} {
		if from != lateName && memVerdict(nodes, c, from, lateName, portProto{1000, "TCP"}) {
			t.Errorf("%s -> %s:1000 passes while the policy is refused", from, lateName)
		}
	}

	// Fits again: applied, refusal cleared.
	if _, err := eng.Apply(snapWith(t, "3", wideIngress("y", 2, 1000))); err != nil {
		t.Fatal(err)
	}
	if eng.Refused() != nil {
		t.Fatal("refusal not cleared by an apply that fits")
	}
	if !memVerdict(nodes, c, "z/c", lateName, portProto{1000, "TCP"}) {
		t.Error("allowed connection denied after the policy that fits")
	}
}

// When the old and the new entries fit one at a time but not together,
// the stale entries go first and the apply succeeds; the map ends equal
// to the new compile.
func TestEngineRemovesStaleFirstWhenOldAndNewDoNotFit(t *testing.T) {
	c := newTestCluster(t, "")
	n := newMemNodes(t, c)["node1"]
	a := snapWith(t, "1", wideIngress("y", 20, 1000))
	b := snapWith(t, "2", wideIngress("y", 20, 2000))
	na, nb := entriesOn(t, a), entriesOn(t, b)
	capacity := max(na, nb) + 5
	n.dp.capacity = capacity
	eng := NewEngine(EngineConfig{Node: "node1", Datapath: n.dp, Endpoints: n.eps, PolicyCapacity: capacity})
	if _, err := eng.Apply(a); err != nil {
		t.Fatal(err)
	}
	st, err := eng.Apply(b)
	if err != nil {
		t.Fatalf("apply of %d entries over %d into %d: %v", nb, na, capacity, err)
	}
	if st.Entries != nb || len(n.dp.policy) != nb {
		t.Fatalf("map holds %d entries, want %d (%+v)", len(n.dp.policy), nb, st)
	}
	want := eng.Current().PolicyMap()
	if !maps.Equal(n.dp.policy, want) {
		t.Fatal("map differs from the compile")
	}
}
