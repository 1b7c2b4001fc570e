package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func headlineRows(t *testing.T) []Row {
	t.Helper()
	var rows []Row
	for i, n := range Headline {
		r, err := NewRow(n, "u", []float64{float64(10 + i), 12, 11}, []float64{10, 10, 10}, "base", 0.95, Higher, "")
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	return rows
}

func TestWriteAndValidateSummary(t *testing.T) {
	rows := headlineRows(t)
	lat, err := NewRow("cni_del_p50", "ms", []float64{30, 20, 25}, []float64{20, 20, 20}, "ptp", 1, Lower, "")
	if err != nil {
		t.Fatal(err)
	}
	rows = append(rows, lat)
	path, err := WriteSummary(t.TempDir(), rows)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateSummary(b, Headline); err != nil {
		t.Fatalf("valid summary rejected: %v\n%s", err, b)
	}
	var back []map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	// The latency row: median 25 over 20, 1.25x, fails a ≤1.0 target.
	last := back[len(back)-1]
	if last["ratio"].(float64) != 1.25 || last["pass"].(bool) {
		t.Fatalf("latency row: %v", last)
	}
}

func TestValidateSummaryRejects(t *testing.T) {
	good := headlineRows(t)
	mutate := func(f func(m []map[string]any)) []byte {
		b, _ := json.Marshal(good)
		var m []map[string]any
		_ = json.Unmarshal(b, &m)
		f(m)
		out, _ := json.Marshal(m)
		return out
	}
	cases := map[string][]byte{
		"not json":           []byte("{"),
		"object not list":    []byte(`{"name":"x"}`),
		"empty list":         []byte(`[]`),
		"trailing data":      append(mutate(func([]map[string]any) {}), []byte(" []")...),
		"ratio as string":    mutate(func(m []map[string]any) { m[0]["ratio"] = "1.0" }),
		"ratio null":         mutate(func(m []map[string]any) { m[0]["ratio"] = nil }),
		"ratio wrong":        mutate(func(m []map[string]any) { m[0]["ratio"] = 7.0 }),
		"baseline zero":      mutate(func(m []map[string]any) { m[0]["baseline"] = 0.0 }),
		"pass not bool":      mutate(func(m []map[string]any) { m[0]["pass"] = "yes" }),
		"pass disagrees":     mutate(func(m []map[string]any) { m[0]["pass"] = false }),
		"missing unit":       mutate(func(m []map[string]any) { delete(m[0], "unit") }),
		"missing target":     mutate(func(m []map[string]any) { delete(m[0], "target") }),
		"empty name":         mutate(func(m []map[string]any) { m[1]["name"] = "" }),
		"duplicate name":     mutate(func(m []map[string]any) { m[1]["name"] = m[0]["name"] }),
		"headline missing":   mutate(func(m []map[string]any) { m[3]["name"] = "other" }),
		"bad better":         mutate(func(m []map[string]any) { m[0]["better"] = "sideways" }),
		"lower better flips": mutate(func(m []map[string]any) { m[0]["better"] = "lower" }),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if err := ValidateSummary(b, Headline); err == nil {
				t.Fatalf("accepted %s", b)
			}
		})
	}
}

func TestNewRow(t *testing.T) {
	r, err := NewRow("x", "Gbit/s", []float64{9, 10, 11}, []float64{10, 10, 10}, "b", 0.95, Higher, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Value != 10 || r.Baseline != 10 || r.Ratio != 1 || !r.Pass || r.Rounds != 3 {
		t.Fatalf("%+v", r)
	}
	if r.SpreadPct != 20 {
		t.Fatalf("spread %v, want 20", r.SpreadPct)
	}
	if _, err := NewRow("x", "u", []float64{1}, []float64{0}, "b", 1, Higher, ""); err == nil {
		t.Fatal("zero baseline accepted")
	}
	if _, err := NewRow("x", "u", nil, []float64{1}, "b", 1, Higher, ""); err == nil {
		t.Fatal("no samples accepted")
	}
}

func TestStats(t *testing.T) {
	if m := Median([]float64{3, 1, 2}); m != 2 {
		t.Fatalf("median %v", m)
	}
	if m := Median([]float64{4, 1, 2, 3}); m != 2.5 {
		t.Fatalf("median %v", m)
	}
	if s := Spread([]float64{5}); s != 0 {
		t.Fatalf("spread of one %v", s)
	}
	ds := []time.Duration{}
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	if p := Percentile(ds, 50, time.Millisecond); p != 50 {
		t.Fatalf("p50 %v", p)
	}
	if p := Percentile(ds, 99, time.Millisecond); p != 99 {
		t.Fatalf("p99 %v", p)
	}
}

func TestParseBench(t *testing.T) {
	out := `goos: linux
BenchmarkLoupeDecodeEnrichFilter 	  300000	      1021 ns/op	    979000 flows/s	     128 B/op	       2 allocs/op
BenchmarkHubbleThreefourDecode-2 	  100000	      2990 ns/op	    334000 flows/s	    2048 B/op	      23 allocs/op
BenchmarkLoupeDecodeEnrichFilter 	  290000	      1100 ns/op	    909000 flows/s	     128 B/op	       2 allocs/op
PASS
`
	rs := ParseBench(out)
	if len(rs) != 3 {
		t.Fatalf("%d results", len(rs))
	}
	got := Samples(rs, "BenchmarkLoupeDecodeEnrichFilter", "flows/s")
	if len(got) != 2 || got[0] != 979000 || got[1] != 909000 {
		t.Fatalf("loupe flows/s %v", got)
	}
	if a := Samples(rs, "BenchmarkHubbleThreefourDecode", "allocs/op"); len(a) != 1 || a[0] != 23 {
		t.Fatalf("hubble allocs %v (suffix -2 not stripped?)", a)
	}
}

// TestSummaryFile validates a summary.json a harness run produced: CI runs
// `make bench-quick` and then this test with LOUPE_BENCH_SUMMARY set.
func TestSummaryFile(t *testing.T) {
	path := os.Getenv("LOUPE_BENCH_SUMMARY")
	if path == "" {
		t.Skip("LOUPE_BENCH_SUMMARY not set")
	}
	if !filepath.IsAbs(path) {
		// Relative to the repository root, where make runs; tests run in bench/.
		path = filepath.Join("..", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateSummary(b, Headline); err != nil {
		t.Fatalf("%s: %v", path, strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
}
