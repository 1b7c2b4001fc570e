package daemon

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCounterCollector: each read's counts are the series, and a failed
// read fails the scrape instead of showing old numbers.
func TestCounterCollector(t *testing.T) {
	var n uint64 = 3
	var fail error
	c := newCounterCollector("loupe_test_total", "A test counter.", "outcome", func() ([]labeledCount, error) {
		return []labeledCount{{"a", n}, {"b", 2 * n}}, fail
	})
	want := `# HELP loupe_test_total A test counter.
# TYPE loupe_test_total counter
loupe_test_total{outcome="a"} 3
loupe_test_total{outcome="b"} 6
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	n = 5
	if got := testutil.ToFloat64(prometheus.Collector(newCounterCollector("x", "x", "l", func() ([]labeledCount, error) {
		return []labeledCount{{"a", n}}, nil
	}))); got != 5 {
		t.Fatalf("count %v, want 5", got)
	}
	fail = errors.New("map gone")
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "map gone") {
		t.Fatalf("gather with a failed read: %v, want its error", err)
	}
}
