package bench

import (
	"bufio"
	"strconv"
	"strings"
)

// BenchResult is one line of `go test -bench` output: the metrics by unit
// (ns/op, B/op, allocs/op and every b.ReportMetric unit).
type BenchResult struct {
	Name    string // without the -GOMAXPROCS suffix
	N       int
	Metrics map[string]float64
}

// ParseBench reads `go test -bench` output and returns every result line, in
// order (one per -count round).
func ParseBench(out string) []BenchResult {
	var res []BenchResult
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue
		}
		name := f[0]
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			if _, err := strconv.Atoi(name[i+1:]); err == nil {
				name = name[:i]
			}
		}
		r := BenchResult{Name: name, N: n, Metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			r.Metrics[f[i+1]] = v
		}
		res = append(res, r)
	}
	return res
}

// Samples returns the metric unit of every result called name.
func Samples(rs []BenchResult, name, unit string) []float64 {
	var out []float64
	for _, r := range rs {
		if v, ok := r.Metrics[unit]; ok && r.Name == name {
			out = append(out, v)
		}
	}
	return out
}
