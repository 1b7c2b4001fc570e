package hubblemetrics

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// BenchmarkObserve: the cost per flow of the default set and of every
// family with the dashboards' contexts (compare the two with benchstat).
func BenchmarkObserve(b *testing.B) {
	for _, c := range []struct{ name, spec string }{{"default", Default}, {"dashboards", Dashboards}} {
		b.Run(c.name, func(b *testing.B) {
			set, err := New(prometheus.NewRegistry(), MustParse(c.spec))
			if err != nil {
				b.Fatal(err)
			}
			flows := sampleFlows()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				set.Observe(flows[i%len(flows)])
			}
		})
	}
}
