package cli

import (
	"bytes"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
	"github.com/loupe-project/loupe/secevents/server"
)

// -o json: one object a line, namespace/pod/rule/priority/output (and
// file) as top-level strings; node events have empty namespace and pod;
// filters reach the server. The lab's TestPrivilegedLabSecurityEvents
// reads the same output for events of the real kernel.
func TestEventsJSON(t *testing.T) {
	store := server.NewStore(0)
	now := time.Now()
	add := func(ns, pod, rule, prio, file string) {
		store.Add(&pb.GetEventsResponse{TimeUnixNano: now.UnixNano(), ResponseTypes: &pb.GetEventsResponse_Event{Event: &pb.SecurityEvent{
			TimeUnixNano: now.UnixNano(), NodeName: "n1", Namespace: ns, Pod: pod, Rule: rule, Priority: prio, Output: rule + " happened",
			File: file, EventType: "openat", Process: &pb.Process{Name: "cat", Argv: []string{"cat", file}, Pid: 7}}}})
	}
	add("x", "a", "Read sensitive file", "Warning", "/etc/shadow")
	add("", "", "Shell on node", "Notice", "")
	add("x", "b", "Read sensitive file", "Warning", "/etc/shadow")
	store.Add(&pb.GetEventsResponse{NodeName: "n1", TimeUnixNano: now.UnixNano(),
		ResponseTypes: &pb.GetEventsResponse_LostEvents{LostEvents: &pb.LostEvents{Source: "kernel_rate_limit", Count: 3}}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	server.NewService(store, "n1").Register(gs)
	go gs.Serve(l)
	defer gs.Stop()

	run := func(args ...string) []map[string]any {
		cmd := newEventsCommand(time.Now)
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"--server", l.Addr().String()}, args...))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		var objs []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(line), &m); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			objs = append(objs, m)
		}
		return objs
	}
	objs := run("--since", "1m", "-o", "json")
	if len(objs) != 4 {
		t.Fatalf("%d lines", len(objs))
	}
	for _, m := range objs[:3] {
		for _, k := range []string{"namespace", "pod", "rule", "priority", "output"} {
			if _, ok := m[k].(string); !ok {
				t.Errorf("%v: %s not a top-level string", m, k)
			}
		}
	}
	if objs[0]["file"] != "/etc/shadow" || objs[0]["namespace"] != "x" || objs[0]["pod"] != "a" || objs[0]["priority"] != "Warning" {
		t.Errorf("first %v", objs[0])
	}
	if _, ok := objs[1]["file"]; ok || objs[1]["pod"] != "" || objs[1]["namespace"] != "" {
		t.Errorf("node event %v", objs[1])
	}
	if lost, ok := objs[3]["lost_events"].(map[string]any); !ok || lost["count"] != float64(3) {
		t.Errorf("lost %v", objs[3])
	}
	if objs := run("--pod", "x/b", "-o", "json"); len(objs) != 2 || objs[0]["pod"] != "b" {
		t.Errorf("--pod x/b: %v", objs)
	}
	if objs := run("--priority", "warning", "--last", "1", "-o", "json"); len(objs) != 2 || objs[0]["pod"] != "b" {
		t.Errorf("--priority warning --last 1: %v", objs)
	}
	if objs := run("--since", "2006-01-02T00:00:00Z", "--rule", "Shell on node", "-o", "json"); len(objs) != 2 {
		t.Errorf("--rule: %v", objs)
	}
	cmd := newEventsCommand(time.Now)
	cmd.SetArgs([]string{"--server", l.Addr().String(), "-o", "yaml"})
	cmd.SetOut(&bytes.Buffer{})
	cmd.SetErr(&bytes.Buffer{})
	if err := cmd.Execute(); err == nil {
		t.Error("-o yaml accepted")
	}
}
