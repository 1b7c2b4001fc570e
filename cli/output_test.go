package cli

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
)

// The expected outputs below follow hubble's printer line for line; the
// compatibility test (compat_test.go) checks them against the real binary.

const wantCompact = `May  6 07:08:09.123: shop/web-7d4f9:43210 (ID:40001) -> shop/db-0:5432 (ID:40002) to-endpoint FORWARDED (TCP Flags: SYN)
May  6 07:08:09.223: shop/web-7d4f9:43210 (ID:40001) <- shop/db-0:5432 (ID:40002) from-endpoint FORWARDED (TCP Flags: SYN, ACK)
May  6 07:08:10.000: shop/web-7d4f9:43211 (ID:40001) -> admin/panel-1:80 (ID:40003) Policy denied DROPPED (TCP Flags: SYN)
May  6 07:08:11.500: shop/web-7d4f9:5353 (ID:40001) -> kube-system/kube-dns:53 (world) policy-verdict:L3-L4 EGRESS ALLOWED (UDP)
May  6 07:08:12.000: 192.0.2.7 (world) <> shop/web-7d4f9 (ID:40001) to-endpoint FORWARDED (IP Trace ID: 42; ICMPv4 EchoRequest; Auth: SPIRE)
May  6 07:08:13.000: shop/^[[31mspoofer (ID:40004) -> fd00:1::12 (host) Invalid source ip DROPPED (ICMPv6 EchoRequest)
May  6 07:08:14.000: shop/web-7d4f9 (ID:40001) <> shop/db-0 (ID:40002) 250, 0 DROPPED (unknown)
May  6 07:08:15.000: shop/web-7d4f9:43212 (ID:40001) -> shop/db-0:8080 (ID:40002) http-request FORWARDED (HTTP/1.1 GET http://db/health)
May  6 07:08:16.000: 02:00:00:00:00:01 (unknown) <> ff:ff:ff:ff:ff:ff (unknown) to-network FORWARDED (ARP)
`

func TestObserveCompact(t *testing.T) {
	addr := startFake(t, &fakeObserver{responses: fixtureResponses()})
	out, stderr, err := run(t, NewObserveCommand(), "--server", addr)
	if err != nil || stderr != "" {
		t.Fatalf("err %v, stderr %q", err, stderr)
	}
	if out != wantCompact {
		t.Errorf("compact output:\n%s\nwant:\n%s", out, wantCompact)
	}
}

func TestObserveCompactOptions(t *testing.T) {
	addr := startFake(t, &fakeObserver{responses: fixtureResponses()[:4]})
	out, _, err := run(t, NewObserveCommand(), "--server", addr, "--print-node-name", "--print-policy-names",
		"--numeric", "--time-format", "RFC3339Milli")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	want := []string{
		"2024-05-06T07:08:09.123Z [node-a]: 10.1.0.11:43210 (ID:40001) -> 10.1.1.12:5432 (ID:40002) to-endpoint FORWARDED (TCP Flags: SYN)",
		"2024-05-06T07:08:09.223Z [node-b]: 10.1.0.11:43210 (ID:40001) <- 10.1.1.12:5432 (ID:40002) from-endpoint FORWARDED (TCP Flags: SYN, ACK)",
		"2024-05-06T07:08:10Z [node-a]: 10.1.0.11:43211 (ID:40001) -> 10.1.1.13:80 (ID:40003) Policy denied DROPPED (TCP Flags: SYN)",
		"2024-05-06T07:08:11.5Z [node-a]: 10.1.0.11:5353 (ID:40001) -> 10.96.0.10:53 (world) policy-verdict:L3-L4 EGRESS ALLOWED BY allow-dns (NetworkPolicy), allow-all-egress (NetworkPolicy) (UDP)",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", out, strings.Join(want, "\n"))
	}
}

func TestObserveColor(t *testing.T) {
	addr := startFake(t, &fakeObserver{responses: fixtureResponses()[2:3]})
	out, _, err := run(t, NewObserveCommand(), "--server", addr, "--color", "always")
	if err != nil {
		t.Fatal(err)
	}
	want := "May  6 07:08:10.000: \x1b[36mshop/web-7d4f9:\x1b[33m43211\x1b[0m\x1b[0m \x1b[35m(ID:40001)\x1b[0m -> " +
		"\x1b[36madmin/panel-1:\x1b[33m80\x1b[0m\x1b[0m \x1b[35m(ID:40003)\x1b[0m Policy denied \x1b[31mDROPPED\x1b[0m (TCP Flags: SYN)\n"
	if out != want {
		t.Errorf("got %q\nwant %q", out, want)
	}
	// auto never colors a pipe (the test's buffer is not a terminal).
	out, _, _ = run(t, NewObserveCommand(), "--server", addr)
	if strings.Contains(out, "\x1b") {
		t.Errorf("auto colored a non-terminal: %q", out)
	}
}

func TestObserveJSON(t *testing.T) {
	resp := fixtureResponses()
	for _, format := range []string{"json", "jsonpb"} {
		t.Run(format, func(t *testing.T) {
			addr := startFake(t, &fakeObserver{responses: resp})
			out, stderr, err := run(t, NewObserveCommand(), "--server", addr, "-o", format)
			if err != nil || stderr != "" {
				t.Fatalf("err %v, stderr %q", err, stderr)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if len(lines) != len(resp) {
				t.Fatalf("%d lines, want %d:\n%s", len(lines), len(resp), out)
			}
			for i, l := range lines {
				got := &observerpb.GetFlowsResponse{}
				if err := protojson.Unmarshal([]byte(l), got); err != nil {
					t.Fatalf("line %d is not a GetFlowsResponse: %v\n%s", i, err, l)
				}
				if !proto.Equal(got, resp[i]) {
					t.Errorf("line %d decodes to another response:\n%s", i, l)
				}
			}
			// Proto field names, enum names, one compact object per line.
			for _, want := range []string{`"pod_name":"web-7d4f9"`, `"node_name":"node-a"`, `"verdict":"DROPPED"`,
				`"drop_reason_desc":"POLICY_DENIED"`, `"traffic_direction":"EGRESS"`, `"trace_observation_point":"TO_ENDPOINT"`,
				`"is_reply":false`, `"event_type":{"type":1,"sub_type":133}`, `{"flow":{"time":"2024-05-06T07:08:09.123456789Z",`} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %s", want)
				}
			}
			for _, bad := range []string{`"podName"`, `"dropReasonDesc"`, `"verdict":2`, "\n\n", `"flow": `} {
				if strings.Contains(out, bad) {
					t.Errorf("output has %q", bad)
				}
			}
		})
	}
}

const wantDict = `  TIMESTAMP: May  6 07:08:09.123
     SOURCE: shop/web-7d4f9:43210
DESTINATION: shop/db-0:5432
       TYPE: to-endpoint
    VERDICT: FORWARDED
    SUMMARY: TCP Flags: SYN
------------
  TIMESTAMP: May  6 07:08:09.223
     SOURCE: shop/db-0:5432
DESTINATION: shop/web-7d4f9:43210
       TYPE: from-endpoint
    VERDICT: FORWARDED
    SUMMARY: TCP Flags: SYN, ACK
------------
  TIMESTAMP: May  6 07:08:10.000
     SOURCE: shop/web-7d4f9:43211
DESTINATION: admin/panel-1:80
       TYPE: Policy denied
    VERDICT: DROPPED
    SUMMARY: TCP Flags: SYN
`

const wantTable = `TIMESTAMP             SOURCE                 DESTINATION            TYPE            VERDICT     SUMMARY
May  6 07:08:09.123   shop/web-7d4f9:43210   shop/db-0:5432         to-endpoint     FORWARDED   TCP Flags: SYN
May  6 07:08:09.223   shop/db-0:5432         shop/web-7d4f9:43210   from-endpoint   FORWARDED   TCP Flags: SYN, ACK
May  6 07:08:10.000   shop/web-7d4f9:43211   admin/panel-1:80       Policy denied   DROPPED     TCP Flags: SYN
`

func TestObserveDictAndTable(t *testing.T) {
	addr := startFake(t, &fakeObserver{responses: fixtureResponses()[:3]})
	for format, want := range map[string]string{"dict": wantDict, "table": wantTable} {
		out, _, err := run(t, NewObserveCommand(), "--server", addr, "-o", format)
		if err != nil {
			t.Fatal(err)
		}
		if out != want {
			t.Errorf("-o %s:\n%s\nwant:\n%s", format, out, want)
		}
	}
}

// TestObserveNotices checks that the text formats print only flows on
// stdout and node-status and lost-events notices on stderr, that -o json
// keeps lost events in the stream (as hubble), and that unavailable nodes
// do not make the command fail.
func TestObserveNotices(t *testing.T) {
	flows := fixtureResponses()[:2]
	resp := []*observerpb.GetFlowsResponse{
		nodeStatusResponse(relaypb.NodeState_NODE_CONNECTED, "", "node-a", "node-b"),
		flows[0],
		nodeStatusResponse(relaypb.NodeState_NODE_UNAVAILABLE, "", "node-c", "node-d"),
		lostEventsResponse(17),
		nodeStatusResponse(relaypb.NodeState_NODE_ERROR, "connection refused", "node-e"),
		flows[1],
	}
	addr := startFake(t, &fakeObserver{responses: resp})

	out, stderr, err := run(t, NewObserveCommand(), "--server", addr)
	if err != nil {
		t.Fatalf("unavailable nodes made observe fail: %v", err)
	}
	if want := strings.Join(strings.Split(wantCompact, "\n")[:2], "\n") + "\n"; out != want {
		t.Errorf("stdout:\n%s\nwant only the flows:\n%s", out, want)
	}
	wantErr := "May  6 07:08:19.000 [relay]: 2 nodes are unavailable: node-c, node-d\n" +
		"May  6 07:08:20.000 EVENTS LOST: HUBBLE_RING_BUFFER CPU(1) 17\n" +
		"May  6 07:08:19.000 [relay]: Error \"connection refused\" on 1 nodes: node-e\n"
	if stderr != wantErr {
		t.Errorf("stderr:\n%s\nwant:\n%s", stderr, wantErr)
	}

	// --debug adds the informational notices.
	_, stderr, _ = run(t, NewObserveCommand(), "--server", addr, "--debug")
	if !strings.Contains(stderr, "Receiving flows from 2 nodes: node-a, node-b") {
		t.Errorf("--debug stderr lacks the connected notice:\n%s", stderr)
	}
	// -o json: the flows and the lost events on stdout, in stream order, so
	// that a saved file says where flows are missing; node status on stderr.
	out, stderr, err = run(t, NewObserveCommand(), "--server", addr, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], `{"flow":`) || !strings.HasPrefix(lines[2], `{"flow":`) ||
		lines[1] != `{"lost_events":{"source":"HUBBLE_RING_BUFFER","num_events_lost":"17","cpu":1},"node_name":"node-a","time":"2024-05-06T07:08:20Z"}` {
		t.Errorf("json stdout is not flow, lost_events, flow:\n%s", out)
	}
	if strings.Contains(out, "node_status") || strings.Contains(stderr, "lost_events") {
		t.Errorf("json: node_status belongs on stderr, lost_events on stdout:\nstdout:\n%s\nstderr:\n%s", out, stderr)
	}
	if !strings.Contains(stderr, `{"node_status":{"state_change":"NODE_UNAVAILABLE","node_names":["node-c","node-d"]}`) {
		t.Errorf("json stderr lacks the node status:\n%s", stderr)
	}
	// -s silences notices, not the lost events of the JSON stream.
	_, stderr, _ = run(t, NewObserveCommand(), "--server", addr, "-s")
	if stderr != "" {
		t.Errorf("--silent-errors printed %q", stderr)
	}
	out, stderr, _ = run(t, NewObserveCommand(), "--server", addr, "-s", "-o", "json")
	if stderr != "" || strings.Count(out, `"lost_events"`) != 1 {
		t.Errorf("-s -o json: stdout:\n%s\nstderr %q", out, stderr)
	}
}

func TestObserveFollow(t *testing.T) {
	fake := &fakeObserver{responses: fixtureResponses()[:1]}
	addr := startFake(t, fake)
	// The fake keeps the stream open after the flow, as a server does; the
	// flow must be printed while the stream is still open.
	out, _, err := runFollow(t, NewObserveCommand(), fake, func(out string) bool { return out != "" }, "--server", addr, "-f")
	if err != nil {
		t.Fatalf("Ctrl-C should end --follow cleanly: %v", err)
	}
	if !fake.takeRequest(t).GetFollow() {
		t.Error("request without follow")
	}
	if want := strings.SplitAfter(wantCompact, "\n")[0]; out != want {
		t.Errorf("followed output %q, want %q", out, want)
	}
}
