package cli

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// filterCase is a set of observe flags and the whitelist and blacklist
// (FlowFilters as JSON) that hubble observe builds from them, worked out from
// hubble's rules. hubbleRejects marks inputs only loupe accepts.
type filterCase struct {
	name          string
	args          []string
	wl, bl        []string
	hubbleRejects bool
}

var filterCases = []filterCase{
	{name: "none", args: nil},
	{name: "pod", args: []string{"--pod", "web"},
		wl: []string{`{"source_pod":["web"]}`, `{"destination_pod":["web"]}`}},
	{name: "pod twice", args: []string{"--pod", "shop/web", "--pod", "shop/db"},
		wl: []string{`{"source_pod":["shop/web","shop/db"]}`, `{"destination_pod":["shop/web","shop/db"]}`}},
	{name: "from-pod", args: []string{"--from-pod", "shop/web"}, wl: []string{`{"source_pod":["shop/web"]}`}},
	{name: "to-pod", args: []string{"--to-pod", "db"}, wl: []string{`{"destination_pod":["db"]}`}},
	{name: "from-pod to-pod", args: []string{"--from-pod", "a", "--to-pod", "b"},
		wl: []string{`{"source_pod":["a"],"destination_pod":["b"]}`}},
	{name: "namespace", args: []string{"-n", "shop"},
		wl: []string{`{"source_pod":["shop/"]}`, `{"destination_pod":["shop/"]}`}},
	{name: "namespace twice", args: []string{"--namespace", "shop", "-n", "admin"},
		wl: []string{`{"source_pod":["shop/","admin/"]}`, `{"destination_pod":["shop/","admin/"]}`}},
	{name: "from-namespace", args: []string{"--from-namespace", "shop"}, wl: []string{`{"source_pod":["shop/"]}`}},
	{name: "to-namespace", args: []string{"--to-namespace", "shop", "--to-namespace", "db"},
		wl: []string{`{"destination_pod":["shop/","db/"]}`}},
	{name: "from and to namespace", args: []string{"--from-namespace", "a", "--to-namespace", "b"},
		wl: []string{`{"source_pod":["a/"],"destination_pod":["b/"]}`}},
	{name: "all namespaces", args: []string{"-A"},
		wl: []string{`{"source_pod":["/"]}`, `{"destination_pod":["/"]}`}},
	{name: "from all namespaces", args: []string{"--from-all-namespaces"}, wl: []string{`{"source_pod":["/"]}`}},
	{name: "to all namespaces", args: []string{"--to-all-namespaces"}, wl: []string{`{"destination_pod":["/"]}`}},
	{name: "pod in namespace", args: []string{"--pod", "web", "-n", "shop"},
		wl: []string{`{"source_pod":["shop/web"]}`, `{"destination_pod":["shop/web"]}`}},
	{name: "from-pod to-namespace", args: []string{"--from-pod", "web", "--to-namespace", "db"},
		wl: []string{`{"source_pod":["web"],"destination_pod":["db/"]}`}},
	{name: "service in namespace", args: []string{"--service", "db", "-n", "shop"},
		wl: []string{`{"source_service":["shop/db"]}`, `{"destination_service":["shop/db"]}`}},
	{name: "label", args: []string{"-l", "app=web"},
		wl: []string{`{"source_label":["app=web"]}`, `{"destination_label":["app=web"]}`}},
	{name: "from-label to-label", args: []string{"--from-label", "app=web", "--to-label", "k8s:app=db"},
		wl: []string{`{"source_label":["app=web"],"destination_label":["k8s:app=db"]}`}},
	{name: "ip", args: []string{"--ip", "10.1.0.11"},
		wl: []string{`{"source_ip":["10.1.0.11"]}`, `{"destination_ip":["10.1.0.11"]}`}},
	{name: "from-ip to-ip", args: []string{"--from-ip", "10.0.0.0/8", "--to-ip", "fd00::12"},
		wl: []string{`{"source_ip":["10.0.0.0/8"],"destination_ip":["fd00::12"]}`}},
	{name: "port", args: []string{"--port", "80"},
		wl: []string{`{"source_port":["80"]}`, `{"destination_port":["80"]}`}},
	{name: "from-port to-port", args: []string{"--from-port", "1024", "--to-port", "53", "--to-port", "5353"},
		wl: []string{`{"source_port":["1024"],"destination_port":["53","5353"]}`}},
	{name: "protocol", args: []string{"--protocol", "tcp", "--protocol", "UDP"}, wl: []string{`{"protocol":["tcp","UDP"]}`}},
	{name: "verdict", args: []string{"--verdict", "DROPPED", "--verdict", "FORWARDED"},
		wl: []string{`{"verdict":["DROPPED","FORWARDED"]}`}},
	{name: "verdict lower case", args: []string{"--verdict", "dropped"}, wl: []string{`{"verdict":["DROPPED"]}`}, hubbleRejects: true},
	{name: "drop reason", args: []string{"--drop-reason-desc", "POLICY_DENIED"}, wl: []string{`{"drop_reason_desc":["POLICY_DENIED"]}`}},
	{name: "type", args: []string{"--type", "drop", "-t", "policy-verdict"},
		wl: []string{`{"event_type":[{"type":1},{"type":5}]}`}},
	{name: "type subtype name", args: []string{"--type", "trace:to-endpoint", "--type", "trace:from-network"},
		wl: []string{`{"event_type":[{"type":4,"match_sub_type":true},{"type":4,"sub_type":10,"match_sub_type":true}]}`}},
	{name: "type numeric", args: []string{"--type", "1:133", "--type", "4:5", "--type", "trace:3"},
		wl: []string{`{"event_type":[{"type":1,"sub_type":133,"match_sub_type":true},{"type":4,"sub_type":5,"match_sub_type":true},{"type":4,"sub_type":3,"match_sub_type":true}]}`}},
	{name: "type numeric with name", args: []string{"--type", "4:to-stack"},
		wl: []string{`{"event_type":[{"type":4,"sub_type":3,"match_sub_type":true}]}`}, hubbleRejects: true},
	{name: "type agent", args: []string{"--type", "agent:policy-updated"},
		wl: []string{`{"event_type":[{"type":130,"sub_type":5,"match_sub_type":true}]}`}},
	{name: "traffic direction", args: []string{"--traffic-direction", "ingress", "--traffic-direction", "EGRESS"},
		wl: []string{`{"traffic_direction":["INGRESS","EGRESS"]}`}},
	{name: "reply", args: []string{"--reply"}, wl: []string{`{"reply":[true]}`}},
	{name: "not-reply", args: []string{"--not-reply"}, wl: []string{`{"reply":[false]}`}},
	{name: "reply=true", args: []string{"--reply=true", "--not", "-A=1"}, wl: []string{`{"reply":[true]}`},
		bl: []string{`{"source_pod":["/"]}`, `{"destination_pod":["/"]}`}},
	{name: "tcp flags", args: []string{"--tcp-flags", "syn", "--tcp-flags", "FIN,ack"},
		wl: []string{`{"tcp_flags":[{"SYN":true},{"FIN":true,"ACK":true}]}`}},
	{name: "identity", args: []string{"--identity", "40001", "--identity", "world"},
		wl: []string{`{"source_identity":[40001,2]}`, `{"destination_identity":[40001,2]}`}},
	{name: "from-identity to-identity", args: []string{"--from-identity", "0x10", "--to-identity", "host"},
		wl: []string{`{"source_identity":[16],"destination_identity":[1]}`}},
	{name: "node name", args: []string{"--node-name", "node-*", "--node-name", "kind/node-b"},
		wl: []string{`{"node_name":["node-*","kind/node-b"]}`}},
	{name: "service", args: []string{"--service", "kube-system/kube-dns"},
		wl: []string{`{"source_service":["kube-system/kube-dns"]}`, `{"destination_service":["kube-system/kube-dns"]}`}},
	{name: "from-service to-service", args: []string{"--from-service", "a", "--to-service", "b"},
		wl: []string{`{"source_service":["a"],"destination_service":["b"]}`}},
	{name: "workload", args: []string{"--workload", "Deployment/web"},
		wl: []string{`{"source_workload":[{"name":"web","kind":"Deployment"}]}`, `{"destination_workload":[{"name":"web","kind":"Deployment"}]}`}},
	{name: "from-workload to-workload", args: []string{"--from-workload", "web", "--to-workload", "StatefulSet/"},
		wl: []string{`{"source_workload":[{"name":"web"}],"destination_workload":[{"kind":"StatefulSet"}]}`}},
	{name: "fqdn", args: []string{"--fqdn", "*.example.com"},
		wl: []string{`{"source_fqdn":["*.example.com"]}`, `{"destination_fqdn":["*.example.com"]}`}},
	{name: "cluster", args: []string{"--from-cluster", "c1", "--to-cluster", "c2"},
		wl: []string{`{"source_cluster_name":["c1"],"destination_cluster_name":["c2"]}`}},
	{name: "misc single", args: []string{"--uuid", "u-1", "--interface", "lxc1", "--ipv4", "--http-method", "GET",
		"--http-header", "x-a:b", "--ip-trace-id", "7", "--snat-ip", "10.0.0.1", "--node-label", "zone=a"},
		wl: []string{`{"uuid":["u-1"],"source_ip_xlated":["10.0.0.1"],"http_method":["GET"],"ip_version":["IPv4"],"node_labels":["zone=a"],"http_header":[{"key":"x-a","value":"b"}],"interface":[{"name":"lxc1"}],"ip_trace_id":["7"]}`}},
	{name: "encrypted", args: []string{"--unencrypted"}, wl: []string{`{"encrypted":[false]}`}},

	// --not sends the next filter to the blacklist.
	{name: "not verdict", args: []string{"--not", "--verdict", "DROPPED"}, bl: []string{`{"verdict":["DROPPED"]}`}},
	{name: "not pod twice", args: []string{"--not", "--pod", "a", "--not", "--pod", "b"},
		bl: []string{`{"source_pod":["a","b"]}`, `{"destination_pod":["a","b"]}`}},
	{name: "not namespace", args: []string{"--not", "-n", "kube-system"},
		bl: []string{`{"source_pod":["kube-system/"]}`, `{"destination_pod":["kube-system/"]}`}},
	{name: "include and exclude", args: []string{"--pod", "web", "--not", "--pod", "db"},
		wl: []string{`{"source_pod":["web"]}`, `{"destination_pod":["web"]}`},
		bl: []string{`{"source_pod":["db"]}`, `{"destination_pod":["db"]}`}},
	{name: "not applies to one flag", args: []string{"--not", "--from-ip", "1.1.1.1", "--to-port", "80"},
		wl: []string{`{"destination_port":["80"]}`}, bl: []string{`{"source_ip":["1.1.1.1"]}`}},
	{name: "not type and protocol", args: []string{"--not", "--type", "trace:to-stack", "--not", "--protocol", "udp", "-n", "shop"},
		wl: []string{`{"source_pod":["shop/"]}`, `{"destination_pod":["shop/"]}`},
		bl: []string{`{"protocol":["udp"],"event_type":[{"type":4,"sub_type":3,"match_sub_type":true}]}`}},
	{name: "not label and from-label are separate sides", args: []string{"-l", "a=b", "--not", "--from-label", "c=d"},
		wl: []string{`{"source_label":["a=b"]}`, `{"destination_label":["a=b"]}`},
		bl: []string{`{"source_label":["c=d"]}`}},
	{name: "not reply", args: []string{"--not", "--reply", "--not", "--tcp-flags", "rst"},
		bl: []string{`{"reply":[true],"tcp_flags":[{"RST":true}]}`}},
	{name: "raw allowlist", args: []string{"--pod", "x", "--allowlist", `{"source_label":["a"]}`, "--denylist", `{"verdict":["DROPPED"]}{"protocol":["udp"]}`},
		wl: []string{`{"source_pod":["x"]}`, `{"destination_pod":["x"]}`, `{"source_label":["a"]}`},
		bl: []string{`{"verdict":["DROPPED"]}`, `{"protocol":["udp"]}`}},
}

func mustFilters(t *testing.T, js []string) []*flowpb.FlowFilter {
	t.Helper()
	var out []*flowpb.FlowFilter
	for _, j := range js {
		f := &flowpb.FlowFilter{}
		if err := protojson.Unmarshal([]byte(j), f); err != nil {
			t.Fatalf("bad test filter %s: %v", j, err)
		}
		out = append(out, f)
	}
	return out
}

// diffFilters describes how got differs from want ("" if equal).
func diffFilters(got, want []*flowpb.FlowFilter) string {
	same := len(got) == len(want)
	for i := 0; same && i < len(got); i++ {
		same = proto.Equal(got[i], want[i])
	}
	if same {
		return ""
	}
	show := func(fs []*flowpb.FlowFilter) string {
		var parts []string
		for _, f := range fs {
			parts = append(parts, protojson.MarshalOptions{UseProtoNames: true}.Format(f))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return "want " + show(want) + "\n got " + show(got)
}

// TestObserveFilters sends each flag set to a real Observer server and checks
// the FlowFilters it receives.
func TestObserveFilters(t *testing.T) {
	fake := &fakeObserver{}
	addr := startFake(t, fake)
	for _, tc := range filterCases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--server", addr, "-o", "json"}, tc.args...)
			if _, stderr, err := run(t, NewObserveCommand(), args...); err != nil {
				t.Fatalf("observe %v: %v (stderr %q)", tc.args, err, stderr)
			}
			req := fake.takeRequest(t)
			if d := diffFilters(req.GetWhitelist(), mustFilters(t, tc.wl)); d != "" {
				t.Errorf("whitelist \n%s", d)
			}
			if d := diffFilters(req.GetBlacklist(), mustFilters(t, tc.bl)); d != "" {
				t.Errorf("blacklist \n%s", d)
			}
		})
	}
}

// TestObserveSelection checks number, first, follow, since, until and the
// field mask of the request.
func TestObserveSelection(t *testing.T) {
	fake := &fakeObserver{}
	addr := startFake(t, fake)
	now := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	abs := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name   string
		args   []string
		number uint64
		first  bool
		follow bool
		since  time.Time
		until  time.Time
		mask   []string
	}{
		{name: "default", args: []string{"-o", "json"}, number: 20},
		{name: "last", args: []string{"-o", "json", "--last", "5"}, number: 5},
		{name: "first", args: []string{"-o", "json", "--first", "3"}, number: 3, first: true},
		{name: "all", args: []string{"-o", "json", "--all"}, number: ^uint64(0)},
		{name: "follow", args: []string{"-o", "json", "-f"}, follow: true},
		{name: "follow last", args: []string{"-o", "json", "-f", "--last", "7"}, number: 7, follow: true},
		{name: "since duration", args: []string{"-o", "json", "--since", "5m"}, since: now.Add(-5 * time.Minute)},
		{name: "since until", args: []string{"-o", "json", "--since", "2024-01-02T03:04:05Z", "--until", "1h"},
			since: abs, until: now.Add(-time.Hour)},
		{name: "until ignored with follow", args: []string{"-o", "json", "-f", "--until", "1h"}, follow: true},
		{name: "since with all", args: []string{"-o", "json", "--since", "2024-01-02", "--all"},
			since: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC)},
		{name: "compact default mask", args: []string{}, number: 20, mask: defaultFieldMask},
		{name: "no default mask", args: []string{"--use-default-field-masks=false"}, number: 20},
		{name: "json field mask", args: []string{"-o", "json", "--field-mask", "time,source.pod_name"}, number: 20,
			mask: []string{"time", "source.pod_name"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := newObserveCommand(func() time.Time { return now })
			args := append([]string{"--server", addr}, tc.args...)
			if tc.follow {
				if _, stderr, err := runFollow(t, cmd, fake, nil, args...); err != nil {
					t.Fatalf("%v (stderr %q)", err, stderr)
				}
			} else if _, stderr, err := run(t, cmd, args...); err != nil {
				t.Fatalf("%v (stderr %q)", err, stderr)
			}
			req := fake.takeRequest(t)
			if req.GetNumber() != tc.number || req.GetFirst() != tc.first || req.GetFollow() != tc.follow {
				t.Errorf("number/first/follow = %d/%v/%v, want %d/%v/%v",
					req.GetNumber(), req.GetFirst(), req.GetFollow(), tc.number, tc.first, tc.follow)
			}
			checkTime := func(what string, got interface{ AsTime() time.Time }, isNil bool, want time.Time) {
				if want.IsZero() != isNil {
					t.Errorf("%s set = %v, want %v", what, !isNil, !want.IsZero())
				} else if !want.IsZero() && !got.AsTime().Equal(want) {
					t.Errorf("%s = %v, want %v", what, got.AsTime(), want)
				}
			}
			checkTime("since", req.GetSince(), req.GetSince() == nil, tc.since)
			checkTime("until", req.GetUntil(), req.GetUntil() == nil, tc.until)
			if got := req.GetFieldMask().GetPaths(); strings.Join(got, ",") != strings.Join(tc.mask, ",") {
				t.Errorf("field mask = %v, want %v", got, tc.mask)
			}
		})
	}
}

func TestPrintRawFilters(t *testing.T) {
	// No server: --print-raw-filters must not connect.
	out, _, err := run(t, NewObserveCommand(), "--server", closedAddr(t), "--print-raw-filters",
		"-n", "shop", "--not", "--verdict", "DROPPED")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Allowlist []string `json:"allowlist"`
		Denylist  []string `json:"denylist"`
	}
	if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if d := diffFilters(mustFilters(t, doc.Allowlist), mustFilters(t, []string{`{"source_pod":["shop/"]}`, `{"destination_pod":["shop/"]}`})); d != "" {
		t.Error(d)
	}
	if d := diffFilters(mustFilters(t, doc.Denylist), mustFilters(t, []string{`{"verdict":["DROPPED"]}`})); d != "" {
		t.Error(d)
	}
	// What it prints is accepted back by --allowlist/--denylist.
	var args []string
	for _, a := range doc.Allowlist {
		args = append(args, "--allowlist", a)
	}
	for _, d := range doc.Denylist {
		args = append(args, "--denylist", d)
	}
	out2, _, err := run(t, NewObserveCommand(), append(args, "--print-raw-filters")...)
	if err != nil || out2 != out {
		t.Errorf("round trip: %v\n%s\nvs\n%s", err, out2, out)
	}
}
