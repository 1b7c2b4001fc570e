package cli

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func FuzzParseEventType(f *testing.F) {
	for _, s := range []string{"trace", "drop", "policy-verdict", "trace:to-endpoint", "trace:from-network", "1:133",
		"4:5", "agent:policy-updated", "l7", "", ":", "trace:", "4294967295:4294967295", "99999999999", "drop:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ft, err := parseEventType(s)
		if err != nil {
			return
		}
		if !strings.Contains(s, ":") && ft.GetMatchSubType() {
			t.Errorf("%q: sub-type matched without one", s)
		}
		if strings.Contains(s, ":") && !ft.GetMatchSubType() {
			t.Errorf("%q: sub-type given but not matched", s)
		}
	})
}

func FuzzParseTCPFlags(f *testing.F) {
	for _, s := range []string{"syn", "SYN,ACK", "fin,rst,psh,urg,ece,cwr,ns", "", ",", "syn,", "bogus"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fl, err := parseTCPFlags(s)
		if err != nil {
			return
		}
		set := 0
		for _, b := range []bool{fl.SYN, fl.ACK, fl.FIN, fl.RST, fl.PSH, fl.URG, fl.ECE, fl.CWR, fl.NS} {
			if b {
				set++
			}
		}
		if set == 0 || set > len(strings.Split(s, ",")) {
			t.Errorf("%q gave %d flags", s, set)
		}
	})
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"5m", "1h30m", "-10s", "0", "2024-01-02", "2024-01-02T03Z", "2024-01-02T03:04Z",
		"2024-01-02T03:04:05Z", "2024-01-02T03:04:05.123+02:00", "Tue, 02 Jan 2024 03:04:05 +0000", "yesterday", "9999999h"} {
		f.Add(s)
	}
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseTime(s, now)
		if err != nil {
			return
		}
		if d, derr := time.ParseDuration(s); derr == nil && !got.Equal(now.Add(-d)) {
			t.Errorf("%q: %v, want now-%v", s, got, d)
		}
	})
}

func FuzzServerTarget(f *testing.F) {
	for _, s := range []string{"localhost:4245", "unix:///run/x.sock", "/run/x.sock", "tls://relay:443", "unix://", "", "http://x", "[::1]:4245"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tgt, _, err := target(s)
		if err == nil && tgt == "" {
			t.Errorf("%q: empty target without error", s)
		}
	})
}

// observeFilterSeeds are FuzzObserveFilterArgs's seeds: observe flag lists,
// NUL-separated. TestCompatHubbleFilterCorpus also sends them, and the
// committed corpus, to the stock hubble CLI.
var observeFilterSeeds = []string{
	"--pod\x00web", "-n\x00shop\x00--not\x00--verdict\x00DROPPED", "--not\x00--not", "-A\x00--from-pod\x00a",
	"--type\x00trace:to-endpoint\x00--tcp-flags\x00syn,ack", "--from-namespace\x00a\x00--to-namespace\x00b",
	"--service\x00db\x00-n\x00x", "--pod\x00a/b\x00-n\x00c", "--workload\x00/\x00--identity\x000x10",
	"--allowlist\x00{\"source_pod\":[\"x\"]}", "--reply=false\x00--not\x00-A=false", "--reply=true\x00--not\x00-A=1",
	"--pod\x00web\x00--help=false", "-f\x00--until\x00bogus\x00--ip\x0010.0.0.1",
}

// observeHelp is what `loupe observe --help` prints.
func observeHelp(t testing.TB) string {
	t.Helper()
	out, _, err := run(t, NewObserveCommand(), "--help")
	if err != nil || !strings.HasPrefix(out, observeLong) {
		t.Fatalf("observe --help: %v\n%s", err, out)
	}
	return out
}

// printRawFiltersOf runs observe --print-raw-filters with args and returns what
// it printed, whether it asked for help instead, and its error.
func printRawFiltersOf(t testing.TB, args []string) (out string, help bool, err error) {
	t.Helper()
	clock := func() time.Time { return time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC) }
	cmd := newObserveCommand(clock)
	full := append(slices.Clone(args), "--print-raw-filters", "--server", "unix:///nonexistent")
	out, _, err = run(t, cmd, full...)
	// -h/--help, wherever it is among the flags, prints the help and does
	// nothing else, as in every cobra command and in the stock hubble.
	help, _ = cmd.Flags().GetBool("help")
	return out, help && err == nil, err
}

// rawFilters decodes --print-raw-filters' YAML back into FlowFilters, the
// way --allowlist and --denylist read them.
func rawFilters(out string) (allow, deny []string, wl, bl []*flowpb.FlowFilter, err error) {
	var doc struct {
		Allowlist []string `json:"allowlist"`
		Denylist  []string `json:"denylist"`
	}
	if err := yaml.UnmarshalStrict([]byte(out), &doc); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("output is not the filters' YAML: %w", err)
	}
	if wl, err = parseRawFilters("allowlist", doc.Allowlist); err != nil {
		return nil, nil, nil, nil, err
	}
	if bl, err = parseRawFilters("denylist", doc.Denylist); err != nil {
		return nil, nil, nil, nil, err
	}
	for _, js := range append(slices.Clone(doc.Allowlist), doc.Denylist...) {
		// Other readers of FlowFilters (protojson) read the printout too.
		if err := protojson.Unmarshal([]byte(js), &flowpb.FlowFilter{}); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("%s is not a FlowFilter in protojson: %w", js, err)
		}
	}
	return doc.Allowlist, doc.Denylist, wl, bl, nil
}

// FuzzObserveFilterArgs feeds arbitrary flag lists (NUL-separated) through
// observe's flag parsing with --print-raw-filters. A help request (-h
// anywhere) prints exactly the help, as in hubble: not filters. Anything else
// it accepts prints filters that decode back into FlowFilters (protojson
// reads them too) and that, given back as --allowlist and --denylist, print
// the same YAML again. That they are the filters the stock hubble sends is
// TestCompatHubbleFilterCorpus, over the seeds and the committed corpus.
func FuzzObserveFilterArgs(f *testing.F) {
	for _, s := range observeFilterSeeds {
		f.Add(s)
	}
	help := observeHelp(f)
	f.Fuzz(func(t *testing.T, s string) {
		args := strings.Split(s, "\x00")
		out, isHelp, err := printRawFiltersOf(t, args)
		if err != nil {
			return
		}
		if isHelp {
			if out != help {
				t.Fatalf("%q: asked for help, printed:\n%s", args, out)
			}
			return
		}
		allow, deny, _, _, err := rawFilters(out)
		if err != nil {
			t.Fatalf("%q: %v\n%s", args, err, out)
		}
		var again []string
		for _, js := range allow {
			again = append(again, "--allowlist", js)
		}
		for _, js := range deny {
			again = append(again, "--denylist", js)
		}
		out2, _, err := printRawFiltersOf(t, again)
		if err != nil {
			t.Fatalf("%q: its filters given back as %q: %v", args, again, err)
		}
		if out2 != out {
			t.Fatalf("%q: its filters given back print other filters:\n%s\nthen\n%s", args, out, out2)
		}
	})
}
