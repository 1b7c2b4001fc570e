package hubblemetrics

import (
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// FuzzParse: any --metrics value either fails to parse or gives specs
// that print and read back the same and build a Set that counts flows
// without a label mismatch.
func FuzzParse(f *testing.F) {
	for _, s := range []string{Default, Dashboards, "flow:labelsContext=source_ip,drop", "flows-to-world:port;any-drop", "a,b c:d=e|f;g", "flow:sourceIngressContext=pod|ip;destinationEgressContext=dns"} {
		f.Add(s)
	}
	flows := sampleFlows()
	f.Fuzz(func(t *testing.T, s string) {
		specs, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(String(specs))
		if err != nil || !reflect.DeepEqual(again, specs) {
			t.Fatalf("%q -> %q -> %v %v", s, String(specs), again, err)
		}
		set, err := New(prometheus.NewRegistry(), specs)
		if err != nil {
			t.Fatalf("%q: New: %v", s, err)
		}
		for _, fl := range flows {
			set.Observe(fl)
		}
		if n := set.labelErrors(); n != 0 {
			t.Fatalf("%q: %d label errors", s, n)
		}
	})
}
