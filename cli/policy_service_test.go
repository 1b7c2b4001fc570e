package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"sigs.k8s.io/yaml"

	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/service"
)

const svcPolicyManifests = `apiVersion: v1
kind: Pod
metadata: {name: web1, namespace: shop, labels: {app: web, pod: web1}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {phase: Running, podIP: 10.0.1.21, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: shop, labels: {app: web, pod: web2}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 8080, name: http}]}]}
status: {phase: Running, podIP: 10.0.1.22, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {phase: Running, podIP: 10.0.1.23, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.5, selector: {app: web}, ports: [{name: http, port: 80, targetPort: http}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-egress, namespace: shop}
spec: {podSelector: {}, policyTypes: [Egress]}
`

const allowWeb1 = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {%s}}}], ports: [{port: 8080}]}]
`

// svcPolicyDir writes the manifests with the EndpointSlices the lab
// derives for the Service (service.EndpointSlicesFor).
func svcPolicyDir(t *testing.T, allow string) string {
	dir := t.TempDir()
	all := svcPolicyManifests + "---\n" + strings.Replace(allowWeb1, "%s", allow, 1)
	snap := &metadata.Snapshot{}
	if _, err := metadata.ParseManifests([]byte(all), snap); err != nil {
		t.Fatal(err)
	}
	for _, es := range service.EndpointSlicesFor(snap.Services[0], snap.Pods) {
		b, err := yaml.Marshal(es)
		if err != nil {
			t.Fatal(err)
		}
		all += "---\n" + string(b)
	}
	if err := os.WriteFile(filepath.Join(dir, "all.yaml"), []byte(all), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPolicyExplainService(t *testing.T) {
	dir := svcPolicyDir(t, "pod: web1")
	out, _, err := run(t, NewPolicyCommand(), "explain", "--manifests-dir", dir, "--from", "shop/client", "--to", "svc/shop/web", "--port", "80")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err != nil || len(lines) != 3 || !strings.HasSuffix(lines[0], ": DENIED") ||
		lines[1] != "  backend shop/web1 (10.0.1.21:8080): ALLOWED" || !strings.HasPrefix(lines[2], "  backend shop/web2 (10.0.1.22:8080): DENIED") {
		t.Fatalf("one backend denied: %v\n%s", err, out)
	}
	dir = svcPolicyDir(t, "app: web")
	out, _, err = run(t, NewPolicyCommand(), "explain", "--manifests-dir", dir, "--from", "shop/client", "--to", "svc/shop/web", "--port", "80", "-o", "json")
	var d struct {
		To       string
		Allowed  bool
		Backends []struct {
			Backend string
			Port    int
			Allowed bool
		}
	}
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || !d.Allowed || d.To != "svc/shop/web" || len(d.Backends) != 2 || d.Backends[0].Port != 8080 {
		t.Fatalf("all backends allowed: %v %+v\n%s", err, d, out)
	}
	out, _, err = run(t, NewPolicyCommand(), "explain", "--manifests-dir", dir, "--from", "shop/client", "--to", "svc/shop/web", "--port", "80")
	if first, _, _ := strings.Cut(out, "\n"); err != nil || first != "shop/client -> svc/shop/web 80/TCP: ALLOWED" {
		t.Fatalf("text: %v\n%s", err, out)
	}
	for _, bad := range [][]string{
		{"--to", "svc/shop/nope", "--port", "80"},
		{"--to", "svc/shop/web", "--port", "81"},
		{"--to", "svc/shop", "--port", "80"},
	} {
		if _, _, err := run(t, NewPolicyCommand(), append([]string{"explain", "--manifests-dir", dir, "--from", "shop/client"}, bad...)...); err == nil {
			t.Errorf("%v: no error", bad)
		}
	}
}

// TestPolicyVerifyToService judges only the connections that reached the
// Service's backends (flows after translation hold the backend's address).
func TestPolicyVerifyToService(t *testing.T) {
	dir := svcPolicyDir(t, "app: web")
	var lines []string
	for _, r := range []*observerpb.GetFlowsResponse{
		synFlow("10.0.1.23", "10.0.1.21", 40001, 8080), // client -> web1 through the Service
		synFlow("10.0.1.23", "10.0.1.22", 40002, 8080), // client -> web2
		synFlow("10.0.1.23", "10.0.1.21", 40003, 9999), // not the Service's port
	} {
		b, _ := json.Marshal(r)
		lines = append(lines, string(b))
	}
	flows := filepath.Join(t.TempDir(), "flows.json")
	os.WriteFile(flows, []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	deny := filepath.Join(t.TempDir(), "deny.yaml")
	os.WriteFile(deny, []byte("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: client-egress, namespace: shop}\nspec: {podSelector: {matchLabels: {app: client}}, policyTypes: [Egress]}\n"), 0o644)
	code := -1
	out, errOut, _ := run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", flows, "--manifests-dir", dir, "--to", "svc/shop/web", "--port", "80")
	if code != exitChange || !strings.Contains(out, "2 of 2 distinct connections (3 flows) would change") {
		t.Errorf("code %d\n%s\n%s", code, out, errOut)
	}
	code = -1
	if _, _, err := run(t, policyCmd(&code), "verify", "-f", deny, "--flows-file", flows, "--manifests-dir", dir, "--to", "svc/shop/web", "--port", "81"); code != exitBadInput && err == nil {
		t.Errorf("a port the Service lacks: code %d", code)
	}
}
