package datapath

import "testing"

// TestDatapathSpecSetsEveryVariable runs the same variable setting the loader
// does, without root: a Go value whose type does not match the C constant
// (an untyped int for a __u64) fails here instead of at agent start.
func TestDatapathSpecSetsEveryVariable(t *testing.T) {
	for name, cfg := range map[string]Config{
		"defaults":      {},
		"no conn stats": {NoConnStats: true},
		"l7 and rates":  {L7: 1, DropEventsPerSecond: 7, L7EventsPerSecond: 3, DNSPorts: []uint16{53, 5353}},
	} {
		if _, err := datapathSpec(cfg); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The resource programs' variables (the mm counter indexes from the
// kernel's BTF, the node's netns) are set by the loader, each of them,
// with the C type.
func TestResourcesSpecSetsEveryVariable(t *testing.T) {
	spec, err := resSpec(4026531840)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{resVarResMmFilepages: true, resVarResMmAnonpages: true, resVarResMmShmempages: true,
		resVarResNodeNetns: true}
	for name := range spec.Variables {
		if len(name) > 4 && name[:4] == "res_" && !want[name] {
			t.Errorf("variable %s is not set by the loader", name)
		}
	}
	var anon uint32
	if err := spec.Variables[resVarResMmAnonpages].Get(&anon); err != nil {
		t.Fatal(err)
	}
	var node uint64
	if err := spec.Variables[resVarResNodeNetns].Get(&node); err != nil || node != 4026531840 {
		t.Errorf("res_node_netns = %d (%v), want 4026531840", node, err)
	}
	vals, err := enumValueByName(mustKernelSpec(t), "MM_ANONPAGES")
	if err != nil || anon != vals["MM_ANONPAGES"] {
		t.Errorf("res_mm_anonpages = %d, kernel says %v (%v)", anon, vals, err)
	}
}
