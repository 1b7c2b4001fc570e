// Package bench is loupe's performance harness: it runs each benchmark for
// several rounds against a baseline measured in the same run, and writes the
// results as a table and as summary.json (see README, "Reading the benchmark
// table").
package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
)

// Better says which direction of a ratio is good.
type Better string

const (
	Higher Better = "higher" // throughput, rates: pass when ratio >= target
	Lower  Better = "lower"  // latencies, allocations: pass when ratio <= target
)

// Headline rows every summary carries.
var Headline = []string{"datapath_throughput", "datapath_rr", "cni_add_p50", "decode_rate"}

// Row is one line of summary.json. The first seven fields are the contract;
// the rest explain the figure.
type Row struct {
	Name     string  `json:"name"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"`
	Baseline float64 `json:"baseline"`
	Ratio    float64 `json:"ratio"`
	Target   float64 `json:"target"`
	Pass     bool    `json:"pass"`

	Better        Better  `json:"better"`
	BaselineName  string  `json:"baseline_name"`
	SpreadPct     float64 `json:"spread_pct"`          // (max-min)/median of the value's rounds, in %
	BaseSpreadPct float64 `json:"baseline_spread_pct"` // the same for the baseline
	Rounds        int     `json:"rounds"`
	Note          string  `json:"note,omitempty"`
}

// NewRow fills ratio and pass from value and baseline samples (one per round).
func NewRow(name, unit string, values, baselines []float64, baselineName string, target float64, better Better, note string) (Row, error) {
	if len(values) == 0 || len(baselines) == 0 {
		return Row{}, fmt.Errorf("row %s: no samples", name)
	}
	v, b := Median(values), Median(baselines)
	if b <= 0 || math.IsNaN(b) || math.IsInf(b, 0) || math.IsNaN(v) || math.IsInf(v, 0) {
		return Row{}, fmt.Errorf("row %s: unusable median value %v / baseline %v", name, v, b)
	}
	r := Row{
		Name: name, Value: v, Unit: unit, Baseline: b, Ratio: v / b, Target: target,
		Better: better, BaselineName: baselineName,
		SpreadPct: Spread(values) * 100, BaseSpreadPct: Spread(baselines) * 100,
		Rounds: min(len(values), len(baselines)), Note: note,
	}
	r.Pass = passes(r.Ratio, target, better)
	return r, nil
}

func passes(ratio, target float64, better Better) bool {
	if better == Lower {
		return ratio <= target
	}
	return ratio >= target
}

// WriteSummary writes rows as summary.json into dir (created if needed).
func WriteSummary(dir string, rows []Row) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("summary: %w", err)
	}
	if rows == nil {
		rows = []Row{}
	}
	b, err := json.MarshalIndent(rows, "", "  ")
	if err != nil {
		return "", fmt.Errorf("summary: %w", err)
	}
	path := filepath.Join(dir, "summary.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("summary: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("summary: %w", err)
	}
	return path, nil
}

// ValidateSummary checks that b is a well-formed summary.json: a non-empty
// list of rows with every contract field of the right JSON type, ratio equal
// to value ÷ baseline, pass agreeing with target and direction, unique names,
// and each name in required present.
func ValidateSummary(b []byte, required []string) error {
	var raw []map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("summary: not a JSON list of objects: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("summary: trailing data after the list")
	}
	if len(raw) == 0 {
		return errors.New("summary: no rows")
	}
	seen := map[string]bool{}
	var errs []error
	for i, m := range raw {
		var name string
		if err := json.Unmarshal(m["name"], &name); err != nil || name == "" {
			errs = append(errs, fmt.Errorf("row %d: name: want a non-empty string", i))
			continue
		}
		if seen[name] {
			errs = append(errs, fmt.Errorf("row %s: duplicate name", name))
		}
		seen[name] = true
		nums := map[string]float64{}
		for _, k := range []string{"value", "baseline", "ratio", "target"} {
			var f float64
			if err := json.Unmarshal(m[k], &f); err != nil || isNull(m[k]) {
				errs = append(errs, fmt.Errorf("row %s: %s: want a JSON number", name, k))
				continue
			}
			nums[k] = f
		}
		var unit string
		if err := json.Unmarshal(m["unit"], &unit); err != nil || unit == "" {
			errs = append(errs, fmt.Errorf("row %s: unit: want a non-empty string", name))
		}
		var pass bool
		if err := json.Unmarshal(m["pass"], &pass); err != nil || isNull(m["pass"]) {
			errs = append(errs, fmt.Errorf("row %s: pass: want true or false", name))
			continue
		}
		if len(nums) < 4 {
			continue
		}
		if nums["baseline"] <= 0 {
			errs = append(errs, fmt.Errorf("row %s: baseline %v: want > 0", name, nums["baseline"]))
			continue
		}
		want := nums["value"] / nums["baseline"]
		if math.Abs(nums["ratio"]-want) > 1e-6*math.Max(1, math.Abs(want)) {
			errs = append(errs, fmt.Errorf("row %s: ratio %v != value/baseline %v", name, nums["ratio"], want))
		}
		better := Higher
		if bm, ok := m["better"]; ok {
			var s string
			if json.Unmarshal(bm, &s) != nil || (s != string(Higher) && s != string(Lower)) {
				errs = append(errs, fmt.Errorf("row %s: better: want %q or %q", name, Higher, Lower))
			}
			better = Better(s)
		}
		if passes(nums["ratio"], nums["target"], better) != pass {
			errs = append(errs, fmt.Errorf("row %s: pass %v disagrees with ratio %.4g vs target %.4g (%s is better)", name, pass, nums["ratio"], nums["target"], better))
		}
	}
	for _, n := range required {
		if !seen[n] {
			errs = append(errs, fmt.Errorf("summary: headline row %s missing", n))
		}
	}
	return errors.Join(errs...)
}

func isNull(m json.RawMessage) bool { return strings.TrimSpace(string(m)) == "null" }

// PrintTable writes rows as an aligned table.
func PrintTable(w io.Writer, rows []Row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "name\tvalue\t±%\tbaseline\t±%\tratio\ttarget\tpass\tunit\tvs\t")
	for _, r := range rows {
		cmp := "≥"
		if r.Better == Lower {
			cmp = "≤"
		}
		pass := "ok"
		if !r.Pass {
			pass = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.0f\t%.3f\t%s%.2f\t%s\t%s\t%s\t\n", r.Name, human(r.Value), r.SpreadPct,
			human(r.Baseline), r.BaseSpreadPct, r.Ratio, cmp, r.Target, pass, r.Unit, r.BaselineName)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nvalue and baseline are medians over the rounds; ±% is (max-min)/median; ratio = value / baseline.")
	for _, r := range rows {
		if r.Note != "" {
			fmt.Fprintf(w, "  %s: %s\n", r.Name, r.Note)
		}
	}
}

// human prints a figure with 3-4 significant digits and an SI suffix.
func human(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case a >= 1e4:
		return fmt.Sprintf("%.3gk", v/1e3)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}
