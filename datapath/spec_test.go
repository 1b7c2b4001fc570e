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
