package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/loupe-project/loupe/contract"
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

func TestPolicyCheck(t *testing.T) {
	dir := policyDir(t)
	allowed := synFlow("10.0.1.12", "10.0.1.10", 40003, 80)
	allowed.GetFlow().EventType = &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}
	allowed.GetFlow().Verdict = flowpb.Verdict_FORWARDED
	allowed.GetFlow().TrafficDirection = flowpb.TrafficDirection_INGRESS
	f := &fakeObserver{responses: []*observerpb.GetFlowsResponse{allowed}}
	code := -1
	out, _, _ := run(t, policyCmd(&code), "check", "--server", startFake(t, f), "--manifests-dir", dir)
	if code != -1 || !strings.Contains(out, "1 policy verdicts checked, 0 disagreements, 0 invalid policies") {
		t.Errorf("agreement: code %d\n%s", code, out)
	}
	wrong := synFlow("10.0.1.12", "10.0.1.10", 40003, 81)
	wrong.GetFlow().EventType = &flowpb.CiliumEventType{Type: contract.MessageTypePolicyVerdict}
	wrong.GetFlow().Verdict = flowpb.Verdict_FORWARDED
	wrong.GetFlow().TrafficDirection = flowpb.TrafficDirection_INGRESS
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
