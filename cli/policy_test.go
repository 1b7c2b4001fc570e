package cli

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/policy"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const policyManifests = `apiVersion: v1
kind: Namespace
metadata: {name: "x", labels: {ns: "x"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: "y", labels: {ns: "y"}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: "x", labels: {pod: a}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80, name: http}]}]}
status: {phase: Running, podIP: 10.0.1.10}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: "y", labels: {pod: b}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {phase: Running, podIP: 10.0.1.11}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: "y", labels: {pod: c}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {phase: Running, podIP: 10.0.1.12}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-http, namespace: "x"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: "y"}}}]
    ports: [{port: http}]
`

func policyDir(t *testing.T) string {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "all.yaml"), []byte(policyManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPolicyExplain(t *testing.T) {
	dir := policyDir(t)
	out, _, err := run(t, NewPolicyCommand(), "explain", "--manifests-dir", dir, "--from", "y/b", "--to", "x/a", "--port", "80")
	if err != nil || !strings.Contains(out, "y/b -> x/a 80/TCP: ALLOWED") || !strings.Contains(out, "allowed by x/from-y-http spec.ingress[0]") {
		t.Errorf("allowed: %v\n%s", err, out)
	}
	out, _, err = run(t, NewPolicyCommand(), "explain", "--manifests-dir", dir, "--from", "y/b", "--to", "x/a", "--port", "80", "--protocol", "UDP")
	if err != nil || !strings.Contains(out, "DENIED") || !strings.Contains(out, "no rule allows it: default deny from x/from-y-http") {
		t.Errorf("denied: %v\n%s", err, out)
	}
	out, _, err = run(t, NewPolicyCommand(), "explain", "--manifests-dir", dir, "--from", "192.0.2.1", "--to", "x/a", "--port", "80", "-o", "json")
	var d struct {
		From    string
		Allowed bool
		Reason  string
	}
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || d.Allowed || d.From != "192.0.2.1" || d.Reason == "" {
		t.Errorf("json: %v %+v\n%s", err, d, out)
	}
	for _, bad := range [][]string{
		{"--from", "y/b", "--to", "x/a", "--port", "80", "--protocol", "ICMP"},
		{"--from", "y/nope", "--to", "x/a", "--port", "80"},
		{"--from", "y", "--to", "x/a", "--port", "80"},
		{"--from", "y/b", "--to", "x/a", "--port", "0"},
	} {
		if _, _, err := run(t, NewPolicyCommand(), append([]string{"explain", "--manifests-dir", dir}, bad...)...); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

func synFlow(src, dst string, sport, dport uint32) *observerpb.GetFlowsResponse {
	return &observerpb.GetFlowsResponse{ResponseTypes: &observerpb.GetFlowsResponse_Flow{Flow: &flowpb.Flow{
		IP: &flowpb.IP{Source: src, Destination: dst},
		L4: &flowpb.Layer4{Protocol: &flowpb.Layer4_TCP{TCP: &flowpb.TCP{SourcePort: sport, DestinationPort: dport,
			Flags: &flowpb.TCPFlags{SYN: true}}}},
		IsReply: wrapperspb.Bool(false),
	}}}
}

// policyCmd runs `loupe policy` with the exit code captured.
func policyCmd(code *int) *cobra.Command {
	exit := func(c int) { *code = c }
	cmd := &cobra.Command{Use: "policy"}
	cmd.AddCommand(newPolicyVerifyCommand(exit), newPolicyCheckCommand(exit))
	return cmd
}

func TestPolicyVerify(t *testing.T) {
	dir := policyDir(t)
	f := &fakeObserver{responses: []*observerpb.GetFlowsResponse{
		synFlow("10.0.1.11", "10.0.1.10", 40001, 80), synFlow("10.0.1.11", "10.0.1.10", 40001, 80),
		synFlow("10.0.1.11", "10.0.1.10", 40002, 80), synFlow("10.0.1.12", "10.0.1.10", 40003, 80),
		synFlow("10.0.1.10", "10.0.1.11", 40004, 8080),
	}}
	addr := startFake(t, f)
	newFile := filepath.Join(t.TempDir(), "new.yaml")
	os.WriteFile(newFile, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-y-http, namespace: "x"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: c}}, namespaceSelector: {}}]
    ports: [{port: http}]
`), 0o644)
	code := -1
	out, errOut, err := run(t, policyCmd(&code), "verify", "-f", newFile, "--server", addr, "--manifests-dir", dir, "--since", "1h")
	if err != nil || code != exitChange || !strings.Contains(out, "1 of 3 distinct connections (5 flows) would change") ||
		!strings.Contains(out, "newly DENIED  y/b -> x/a:80/TCP  2 connections  by x/from-y-http") {
		t.Errorf("verify: code %d err %v\n%s\n%s", code, err, out, errOut)
	}
	if req := f.takeRequest(t); req.GetSince() == nil || req.GetFollow() {
		t.Errorf("request %v", req)
	}
	code = -1
	out, _, _ = run(t, policyCmd(&code), "verify", "-f", newFile, "--server", addr, "--manifests-dir", dir, "-o", "json")
	var res struct {
		Connections int
		Changes     []verifyChange
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitChange || res.Connections != 3 || len(res.Changes) != 1 ||
		res.Changes[0].Verdict != "denied" || res.Changes[0].Connections != 2 || res.Changes[0].Flows != 3 {
		t.Errorf("json: code %d %+v %v\n%s", code, res, err, out)
	}
	// The current policy again: no change, exit 0.
	same := filepath.Join(t.TempDir(), "same.yaml")
	os.WriteFile(same, []byte(policyManifests[strings.Index(policyManifests, "apiVersion: networking.k8s.io/v1"):]), 0o644)
	code = -1
	out, _, _ = run(t, policyCmd(&code), "verify", "-f", same, "--server", addr, "--manifests-dir", dir)
	if code != -1 || !strings.Contains(out, "no change: 3 distinct connections") {
		t.Errorf("no change: code %d\n%s", code, out)
	}
	// Bad input: exit 2 with the object and field named, nothing printed on stdout.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports: [{port: 80, protocol: ICMP}]\n"), 0o644)
	code = -1
	out, errOut, _ = run(t, policyCmd(&code), "verify", "-f", bad, "--server", addr, "--manifests-dir", dir)
	if code != exitBadInput || out != "" || !strings.Contains(errOut, "NetworkPolicy x/p is invalid: spec.ingress[0].ports[0].protocol") {
		t.Errorf("bad input: code %d\n%s\n%s", code, out, errOut)
	}
	code = -1
	_, errOut, _ = run(t, policyCmd(&code), "verify", "-f", newFile, "--server", closedAddr(t), "--manifests-dir", dir, "--timeout", "300ms", "--request-timeout", "1s")
	if code != exitBadInput || !strings.Contains(errOut, "cannot reach") {
		t.Errorf("unreachable server: code %d %s", code, errOut)
	}
}

// ingressVerdict is the policy-verdict flow of y/c's allowed connection
// to x/a on dport.
func ingressVerdict(dport uint32) *observerpb.GetFlowsResponse {
	r := synFlow("10.0.1.12", "10.0.1.10", 40003, dport)
	r.GetFlow().EventType = &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}
	r.GetFlow().Verdict = flowpb.Verdict_FORWARDED
	r.GetFlow().TrafficDirection = flowpb.TrafficDirection_INGRESS
	return r
}

func TestPolicyCheck(t *testing.T) {
	dir := policyDir(t)
	allowed := ingressVerdict(80)
	f := &fakeObserver{responses: []*observerpb.GetFlowsResponse{allowed}}
	code := -1
	out, _, _ := run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir)
	if code != -1 || !strings.Contains(out, "1 policy verdicts checked, 0 disagreements\n") {
		t.Errorf("agreement: code %d\n%s", code, out)
	}
	wrong := ingressVerdict(81)
	f = &fakeObserver{responses: []*observerpb.GetFlowsResponse{allowed, wrong}}
	out, _, _ = run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir)
	if code != exitChange || !strings.Contains(out, "loupe bug: y/c -> x/a:81/TCP ingress: the datapath allowed it, the model denies it") {
		t.Errorf("disagreement: code %d\n%s", code, out)
	}
}

// Ran (#15): an invalid policy in the manifests was ignored, and check
// passed. It now names each one and exits 1, even with the verdicts in
// agreement (the invalid policy is enforced fail-closed on both sides).
func TestPolicyCheckNamesInvalidPolicies(t *testing.T) {
	dir := policyDir(t)
	bad := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: lower-tcp, namespace: "y"}
spec:
  podSelector: {}
  ingress:
  - ports: [{protocol: tcp, port: 80}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: except-outside, namespace: "x"}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{ipBlock: {cidr: 10.0.0.0/16, except: [10.1.0.0/24]}}]
`
	if err := os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	f := &fakeObserver{}
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir)
	for _, want := range []string{
		"invalid policy x/except-outside, enforced fail-closed: spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: \"10.1.0.0/24\"",
		"invalid policy y/lower-tcp, enforced fail-closed: spec.ingress[0].ports[0].protocol: Unsupported value: \"tcp\"",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if code != exitChange || !strings.Contains(out, "0 disagreements, 2 invalid policies") {
		t.Errorf("code %d\n%s", code, out)
	}
	code = -1
	out, _, _ = run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir, "-o", "json")
	if code != exitChange || !strings.Contains(out, `"namespace": "x"`) || !strings.Contains(out, `"name": "lower-tcp"`) {
		t.Errorf("json: code %d\n%s", code, out)
	}
}

// verify reads `loupe observe -o json` output instead of a server.
func TestPolicyVerifyFlowsFile(t *testing.T) {
	dir := policyDir(t)
	var lines []string
	for _, r := range []*observerpb.GetFlowsResponse{synFlow("10.0.1.11", "10.0.1.10", 40001, 80), synFlow("10.0.1.12", "10.0.1.10", 40003, 80)} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	flows := filepath.Join(t.TempDir(), "flows.json")
	os.WriteFile(flows, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y-http, namespace: \"x\"}\nspec: {podSelector: {}}\n"), 0o644)
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", flows, "--manifests-dir", dir)
	if code != exitChange || !strings.Contains(out, "2 of 2 distinct connections (2 flows) would change") {
		t.Errorf("code %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(flows, []byte("{not json\n"), 0o644)
	code = -1
	_, errOut, _ = run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", flows, "--manifests-dir", dir)
	if code != exitBadInput || !strings.Contains(errOut, "line 1: not a flow") {
		t.Errorf("bad flows file: code %d %s", code, errOut)
	}
}

// writeFlowsFile writes responses as `loupe observe -o json` does.
func writeFlowsFile(t *testing.T, resp ...*observerpb.GetFlowsResponse) string {
	t.Helper()
	var b strings.Builder
	for _, r := range resp {
		j, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "flows.json")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// A deny-all written with a bare `namespace: y` denies the recorded traffic
// into y: read as YAML 1.1, y was "true" and verify said "no change" (#15).
func TestPolicyVerifyBareNamespaceY(t *testing.T) {
	dir := policyDir(t)
	flows := writeFlowsFile(t, synFlow("10.0.1.10", "10.0.1.11", 40004, 8080), synFlow("10.0.1.12", "10.0.1.11", 40005, 9090))
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: deny-all
  namespace: y
spec:
  podSelector: {}
  policyTypes: [Ingress]
`), 0o644)
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", flows, "--manifests-dir", dir)
	if code != exitChange || !strings.Contains(out, "2 of 2 distinct connections (2 flows) would change") ||
		!strings.Contains(out, "newly DENIED  x/a -> y/b:8080/TCP  1 connections  by y/deny-all") ||
		!strings.Contains(out, "newly DENIED  y/c -> y/b:9090/TCP  1 connections  by y/deny-all") {
		t.Errorf("code %d\n%s\n%s", code, out, errOut)
	}
}

// Every line of a flows file is a flow, lost-events or node-status record,
// or a bare Flow; anything else is refused with its line number, and lost
// events are counted as losses, not flows (#15).
func TestPolicyVerifyFlowsFileLines(t *testing.T) {
	dir := policyDir(t)
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y-http, namespace: x}\nspec: {podSelector: {}}\n"), 0o644)
	good, err := json.Marshal(synFlow("10.0.1.11", "10.0.1.10", 40001, 80))
	if err != nil {
		t.Fatal(err)
	}
	bare, err := json.Marshal(synFlow("10.0.1.12", "10.0.1.10", 40002, 80).GetFlow())
	if err != nil {
		t.Fatal(err)
	}
	lost, _ := json.Marshal(lostEventsResponse(17))
	status, _ := json.Marshal(nodeStatusResponse(relaypb.NodeState_NODE_CONNECTED, "", "node-a"))
	for _, tc := range []struct{ line, want string }{
		{`{"flow": 5}`, "line 2: not a flow record"},
		{`{"flow": 5, "time": "2024-05-06T07:08:09Z"}`, "line 2: not a flow record"},
		{`{"flow": {}}`, "line 2: a flow with no flow fields"},
		{`{"flow": {"typo": 1}}`, "line 2: a flow with no flow fields"},
		{`{"flow": {"verdict": "VERDICT_UNKNOWN"}}`, "line 2: a flow with no flow fields"},
		{`{}`, "line 2: a flow with no flow fields"},
		{`{"typo": 1}`, "line 2: a flow with no flow fields"},
		{`{"lost_events": 5}`, "line 2: not a flow record"},
		{`[{"flow": {}}]`, "line 2: not a flow record"},
		{`{"IP": "10.0.1.1"}`, "line 2: not a flow record"},
	} {
		path := filepath.Join(t.TempDir(), "flows.json")
		os.WriteFile(path, []byte(string(good)+"\n"+tc.line+"\n"), 0o644)
		code := -1
		out, errOut, _ := run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", path, "--manifests-dir", dir)
		if code != exitBadInput || out != "" || !strings.Contains(errOut, path+": "+tc.want) {
			t.Errorf("%s: code %d, want %d and %q\n%s%s", tc.line, code, exitBadInput, tc.want, out, errOut)
		}
	}

	// Valid lines: a flow, lost events, node status, a bare Flow (older
	// hubble), blank lines. Two flows; the lost events are no flow.
	path := filepath.Join(t.TempDir(), "flows.json")
	os.WriteFile(path, []byte(strings.Join([]string{string(good), string(lost), "", string(status), "  " + string(bare) + "\r"}, "\n")), 0o644)
	rec, err := readFlowsFile(path)
	if err != nil || len(rec.flows) != 2 || rec.lost.Records != 1 || rec.lost.Events != 17 || rec.lost.BySource["HUBBLE_RING_BUFFER"] != 17 {
		t.Fatalf("%v %+v", err, rec)
	}
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", path, "--manifests-dir", dir)
	if !strings.Contains(out, "2 of 2 distinct connections (2 flows) would change") {
		t.Errorf("code %d\n%s%s", code, out, errOut)
	}
}

// No flows, or none that opens a connection, is nothing to judge: exit 2,
// as --help promises, not "no change" (#15).
func TestPolicyVerifyNothingToJudge(t *testing.T) {
	dir := policyDir(t)
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y-http, namespace: x}\nspec: {podSelector: {}}\n"), 0o644)
	reply := synFlow("10.0.1.10", "10.0.1.11", 80, 40001)
	reply.GetFlow().IsReply = wrapperspb.Bool(true)
	empty := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(empty, nil, 0o644)
	blank := filepath.Join(t.TempDir(), "blank.json")
	os.WriteFile(blank, []byte("\n  \n\n"), 0o644)
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"empty file":   {[]string{"--flows-file", empty}, "Error: nothing to judge: no flows in " + empty + "\n"},
		"blank lines":  {[]string{"--flows-file", blank}, "Error: nothing to judge: no flows in " + blank + "\n"},
		"only replies": {[]string{"--flows-file", writeFlowsFile(t, reply)}, "Error: nothing to judge: none of the 1 flows in "},
		"empty server": {[]string{"--server", startFake(t, &fakeObserver{}), "--since", "5m"}, "Error: nothing to judge: no flows on the server since --since 5m\n"},
	} {
		for _, o := range []string{"text", "json"} {
			code := -1
			out, errOut, err := run(t, policyCmd(&code), append([]string{"verify", "-f", deny, "--manifests-dir", dir, "-o", o}, tc.args...)...)
			if err != nil || code != exitCannotJudge || out != "" || !strings.HasPrefix(errOut, tc.want) {
				t.Errorf("%s -o %s: code %d err %v, want %d and %q\nstdout: %s\nstderr: %s", name, o, code, err, exitCannotJudge, tc.want, out, errOut)
			}
		}
	}
}

// Lost events are reported with how many events they hold. A change found
// exits 1 whatever is lost; "no change" with lost events exits 2: the
// verdict is incomplete (#15). observe -o json carries them to a file.
func TestPolicyVerifyLostEvents(t *testing.T) {
	dir := policyDir(t)
	perf := lostEventsResponse(3)
	perf.GetLostEvents().Source = flowpb.LostEventSource_PERF_EVENT_RING_BUFFER
	fake := &fakeObserver{responses: []*observerpb.GetFlowsResponse{
		synFlow("10.0.1.11", "10.0.1.10", 40001, 80), lostEventsResponse(17),
		synFlow("10.0.1.12", "10.0.1.10", 40003, 80), perf,
	}}
	addr := startFake(t, fake)
	// The same flows through a file that loupe observe -o json wrote.
	saved, _, err := run(t, NewObserveCommand(), "--server", addr, "-o", "json", "--all")
	if err != nil {
		t.Fatal(err)
	}
	flowsFile := filepath.Join(t.TempDir(), "flows.json")
	os.WriteFile(flowsFile, []byte(saved), 0o644)

	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y-http, namespace: x}\nspec: {podSelector: {}}\n"), 0o644)
	same := filepath.Join(t.TempDir(), "same.yaml")
	os.WriteFile(same, []byte(policyManifests[strings.Index(policyManifests, "apiVersion: networking.k8s.io/v1"):]), 0o644)
	const lostLine = "lost events: 20 events lost in 2 lost-events records (HUBBLE_RING_BUFFER 17, PERF_EVENT_RING_BUFFER 3): the flows in them were not judged\n"

	for _, src := range [][]string{{"--server", addr}, {"--flows-file", flowsFile}} {
		code := -1
		out, errOut, _ := run(t, policyCmd(&code), append([]string{"verify", "-f", deny, "--manifests-dir", dir}, src...)...)
		want := "2 of 2 distinct connections (2 flows) would change:\n" +
			"newly DENIED  y/b -> x/a:80/TCP  1 connections  by x/from-y-http\n" +
			"newly DENIED  y/c -> x/a:80/TCP  1 connections  by x/from-y-http\n" + lostLine
		if code != exitChange || out != want {
			t.Errorf("%v: change with lost events: code %d, want %d\n%s\nwant:\n%s%s", src, code, exitChange, out, want, errOut)
		}

		code = -1
		out, errOut, _ = run(t, policyCmd(&code), append([]string{"verify", "-f", same, "--manifests-dir", dir}, src...)...)
		want = "incomplete: 2 distinct connections (2 flows) keep their verdict, but flows are missing\n" + lostLine
		if code != exitCannotJudge || out != want {
			t.Errorf("%v: no change with lost events: code %d, want %d\n%s\nwant:\n%s%s", src, code, exitCannotJudge, out, want, errOut)
		}

		code = -1
		out, _, _ = run(t, policyCmd(&code), append([]string{"verify", "-f", same, "--manifests-dir", dir, "-o", "json"}, src...)...)
		var res struct {
			Complete   *bool
			LostEvents lostSummary `json:"lost_events"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitCannotJudge || res.Complete == nil || *res.Complete ||
			res.LostEvents.Records != 2 || res.LostEvents.Events != 20 || res.LostEvents.BySource["PERF_EVENT_RING_BUFFER"] != 3 {
			t.Errorf("%v: json: code %d %v %+v\n%s", src, code, err, res, out)
		}
	}

	// Only lost events: still nothing to judge, and the losses are named.
	code := -1
	_, errOut, _ := run(t, policyCmd(&code), "verify", "-f", deny, "--manifests-dir", dir, "--flows-file", writeFlowsFile(t, lostEventsResponse(5)))
	if code != exitCannotJudge || !strings.Contains(errOut, "nothing to judge: no flows in ") ||
		!strings.HasSuffix(errOut, "; 5 events lost in 1 lost-events record (HUBBLE_RING_BUFFER 5)\n") {
		t.Errorf("only lost events: code %d\n%s", code, errOut)
	}

	// Nothing lost: complete, exit 0.
	code = -1
	out, _, _ := run(t, policyCmd(&code), "verify", "-f", same, "--manifests-dir", dir, "-o", "json",
		"--flows-file", writeFlowsFile(t, synFlow("10.0.1.11", "10.0.1.10", 40001, 80)))
	if code != -1 || !strings.Contains(out, `"complete": true`) || !strings.Contains(out, `"lost_events": {
    "records": 0,
    "events": 0
  }`) {
		t.Errorf("complete: code %d\n%s", code, out)
	}
}

// check, like verify: nothing to judge exits 2; lost events are reported,
// a disagreement exits 1 whatever is lost, agreement with losses exits 2.
func TestPolicyCheckIncomplete(t *testing.T) {
	dir := policyDir(t)
	verdict := ingressVerdict
	check := func(resp ...*observerpb.GetFlowsResponse) (code int, out, errOut string) {
		code = -1
		out, errOut, _ = run(t, policyCmd(&code), "check", "--server", startFake(t, &fakeObserver{responses: resp}),
			"--manifests-dir", dir, "--since", "5m")
		return code, out, errOut
	}
	const lostLine = "lost events: 17 events lost in 1 lost-events record (HUBBLE_RING_BUFFER 17): the flows in them were not judged\n"

	code, out, errOut := check()
	if code != exitCannotJudge || out != "" || errOut != "Error: nothing to judge: no flows on the server since --since 5m\n" {
		t.Errorf("no flows: code %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = check(synFlow("10.0.1.11", "10.0.1.10", 40001, 80), lostEventsResponse(17))
	if code != exitCannotJudge || out != "" || errOut != "Error: nothing to judge: none of the 1 flows on the server since --since 5m "+
		"is a policy verdict or a policy drop; 17 events lost in 1 lost-events record (HUBBLE_RING_BUFFER 17)\n" {
		t.Errorf("no verdicts: code %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = check(verdict(80), lostEventsResponse(17))
	if want := "incomplete: 1 policy verdicts checked, 0 disagreements, but flows are missing\n" + lostLine; code != exitCannotJudge || out != want {
		t.Errorf("agreement with lost events: code %d\n%s\nwant:\n%s%s", code, out, want, errOut)
	}
	code, out, errOut = check(verdict(80), verdict(81), lostEventsResponse(17))
	if !strings.HasPrefix(out, "loupe bug: y/c -> x/a:81/TCP ingress") || !strings.HasSuffix(out, "2 policy verdicts checked, 1 disagreements\n"+lostLine) ||
		code != exitChange {
		t.Errorf("disagreement with lost events: code %d\n%s%s", code, out, errOut)
	}
	code = -1
	out, _, _ = run(t, policyCmd(&code), "check", "--server", startFake(t, &fakeObserver{responses: []*observerpb.GetFlowsResponse{verdict(80), lostEventsResponse(17)}}),
		"--manifests-dir", dir, "-o", "json")
	var res struct {
		Checked    int
		Complete   *bool
		LostEvents lostSummary `json:"lost_events"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitCannotJudge || res.Checked != 1 || res.Complete == nil || *res.Complete || res.LostEvents.Events != 17 {
		t.Errorf("json: code %d %v %+v\n%s", code, err, res, out)
	}
}

// Nodes a relay could not read leave flows missing, as lost events do:
// reported, and "no change" or agreement over them exits 2.
func TestPolicyUnavailableNodes(t *testing.T) {
	dir := policyDir(t)
	same := filepath.Join(t.TempDir(), "same.yaml")
	os.WriteFile(same, []byte(policyManifests[strings.Index(policyManifests, "apiVersion: networking.k8s.io/v1"):]), 0o644)
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: from-y-http, namespace: x}\nspec: {podSelector: {}}\n"), 0o644)
	verdict := synFlow("10.0.1.12", "10.0.1.10", 40003, 80)
	verdict.GetFlow().EventType = &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}
	verdict.GetFlow().Verdict = flowpb.Verdict_FORWARDED
	verdict.GetFlow().TrafficDirection = flowpb.TrafficDirection_INGRESS
	resp := []*observerpb.GetFlowsResponse{
		nodeStatusResponse(relaypb.NodeState_NODE_CONNECTED, "", "node-a"),
		nodeStatusResponse(relaypb.NodeState_NODE_UNAVAILABLE, "", "node-d", "node-c"),
		verdict,
		nodeStatusResponse(relaypb.NodeState_NODE_ERROR, "connection refused", "node-e", "node-c"),
		nodeStatusResponse(relaypb.NodeState_NODE_GONE, "", "node-f"),
	}
	addr := startFake(t, &fakeObserver{responses: resp})
	// A file saved with 2>&1 holds the node status too.
	file := writeFlowsFile(t, resp...)
	const missing = "unavailable nodes: 3 nodes (node-c, node-d, node-e): their flows were not judged\n"
	for _, src := range [][]string{{"--server", addr}, {"--flows-file", file}} {
		code := -1
		out, errOut, _ := run(t, policyCmd(&code), append([]string{"verify", "-f", same, "--manifests-dir", dir}, src...)...)
		if want := "incomplete: 1 distinct connections (1 flows) keep their verdict, but flows are missing\n" + missing; code != exitCannotJudge || out != want {
			t.Errorf("%v: no change: code %d\n%s\nwant:\n%s%s", src, code, out, want, errOut)
		}
		code = -1
		out, errOut, _ = run(t, policyCmd(&code), append([]string{"verify", "-f", deny, "--manifests-dir", dir}, src...)...)
		if code != exitChange || !strings.HasSuffix(out, "by x/from-y-http\n"+missing) {
			t.Errorf("%v: change: code %d\n%s%s", src, code, out, errOut)
		}
		code = -1
		out, _, _ = run(t, policyCmd(&code), append([]string{"verify", "-f", same, "--manifests-dir", dir, "-o", "json"}, src...)...)
		var res struct {
			Complete    *bool
			Unavailable []string `json:"unavailable_nodes"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitCannotJudge || res.Complete == nil || *res.Complete ||
			strings.Join(res.Unavailable, ",") != "node-c,node-d,node-e" {
			t.Errorf("%v: json: code %d %v %+v\n%s", src, code, err, res, out)
		}
	}
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "check", "--server", addr, "--manifests-dir", dir)
	if want := "incomplete: 1 policy verdicts checked, 0 disagreements, but flows are missing\n" + missing; code != exitCannotJudge || out != want {
		t.Errorf("check: code %d\n%s\nwant:\n%s%s", code, out, want, errOut)
	}
	// Nodes that connect or leave take nothing away: complete, exit 0.
	code = -1
	out, _, _ = run(t, policyCmd(&code), "verify", "-f", same, "--manifests-dir", dir, "--flows-file", writeFlowsFile(t, resp[0], verdict, resp[4]))
	if code != -1 || out != "no change: 1 distinct connections (1 flows) keep their verdict\n" {
		t.Errorf("connected and gone nodes: code %d\n%s", code, out)
	}
}

// A node whose policy map cannot hold what its agent compiles refuses the
// policy set (policy.Engine's CapacityError); check names it and exits 1.
// The JSON output always sizes every node's map.
func TestPolicyCheckNamesNodesThatRefuse(t *testing.T) {
	dir := policyDir(t)
	allowed := ingressVerdict(80)
	f := &fakeObserver{responses: []*observerpb.GetFlowsResponse{allowed}}
	capacity, err := datapath.PolicyMapCapacity()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := loadManifests(dir)
	if err != nil {
		t.Fatal(err)
	}
	fits := policy.NodeFits(snap, capacity)
	if len(fits) != 1 || fits[0].Node != "n1" || fits[0].Entries == 0 || !fits[0].Fits || fits[0].Capacity != capacity {
		t.Fatalf("fits %+v", fits)
	}
	var res struct {
		PolicyMap []policy.NodeFit `json:"policy_map"`
	}
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir, "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != -1 || errOut != "" || len(res.PolicyMap) != 1 || res.PolicyMap[0] != fits[0] ||
		res.PolicyMap[0].MemoryBytes != int64(fits[0].Entries)*datapath.PolicyEntryBytes {
		t.Errorf("fits, json: code %d %v\n%s", code, err, out)
	}

	policyMapCapacity = func() (int, error) { return fits[0].Entries - 1, nil }
	t.Cleanup(func() { policyMapCapacity = datapath.PolicyMapCapacity })
	code = -1
	out, errOut, _ = run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir)
	refused := fmt.Sprintf("node n1 refuses the policy: its 3 pods need %d policy map entries", fits[0].Entries)
	if code != exitChange || !strings.Contains(out, refused) || !strings.Contains(errOut, refused) ||
		!strings.Contains(out, "1 policy verdicts checked, 0 disagreements, 1 nodes refuse the policy") {
		t.Errorf("refused: code %d\n%s\n%s", code, out, errOut)
	}
	code = -1
	out, _, _ = run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir, "-o", "json")
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != exitChange || len(res.PolicyMap) != 1 || res.PolicyMap[0].Fits ||
		res.PolicyMap[0].Entries != fits[0].Entries || res.PolicyMap[0].MemoryBytes != int64(fits[0].Entries)*datapath.PolicyEntryBytes {
		t.Errorf("json: code %d %v\n%s", code, err, out)
	}
}
