package cli

import (
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

// FuzzObserveFilterArgs feeds arbitrary flag lists (NUL-separated) through
// observe's flag parsing; whatever it accepts must print filters that decode
// back into FlowFilters.
func FuzzObserveFilterArgs(f *testing.F) {
	for _, s := range []string{
		"--pod\x00web", "-n\x00shop\x00--not\x00--verdict\x00DROPPED", "--not\x00--not", "-A\x00--from-pod\x00a",
		"--type\x00trace:to-endpoint\x00--tcp-flags\x00syn,ack", "--from-namespace\x00a\x00--to-namespace\x00b",
		"--service\x00db\x00-n\x00x", "--pod\x00a/b\x00-n\x00c", "--workload\x00/\x00--identity\x000x10",
		"--allowlist\x00{\"source_pod\":[\"x\"]}", "--reply=false\x00--not\x00-A=false",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		args := append(strings.Split(s, "\x00"), "--print-raw-filters", "--server", "unix:///nonexistent")
		out, _, err := run(t, NewObserveCommand(), args...)
		if err != nil {
			return
		}
		var doc struct {
			Allowlist []string `json:"allowlist"`
			Denylist  []string `json:"denylist"`
		}
		if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%q: output is not YAML: %v\n%s", args, err, out)
		}
		for _, js := range append(doc.Allowlist, doc.Denylist...) {
			if err := protojson.Unmarshal([]byte(js), &flowpb.FlowFilter{}); err != nil {
				t.Fatalf("%q: %q is not a FlowFilter: %v", args, js, err)
			}
		}
	})
}
