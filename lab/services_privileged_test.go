package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loupe-project/loupe/cli"
)

// explain runs `loupe policy explain` on the lab's manifests folder and
// returns its first line.
func (tl *testLab) explain(t *testing.T, from, to, port string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := cli.NewPolicyCommand()
	cmd.SetArgs([]string{"explain", "--manifests-dir", filepath.Join(tl.dir, "manifests"), "--from", from, "--to", to, "--port", port})
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	if err := cmd.Execute(); err != nil {
		t.Fatalf("policy explain: %v\n%s", err, out.String())
	}
	first, _, _ := strings.Cut(out.String(), "\n")
	return first
}

const svcLabManifest = `apiVersion: v1
kind: Pod
metadata: {name: web1, namespace: shop, labels: {app: web, serving: "yes"}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web2, namespace: shop, labels: {app: web, serving: "yes"}}
spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: stranger, namespace: shop, labels: {app: stranger}}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web, serving: "yes"}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-egress, namespace: shop}
spec: {podSelector: {}, policyTypes: [Egress]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-to-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: client}}
  policyTypes: [Egress]
  egress: [{to: [{podSelector: {matchLabels: {app: web}}}]}]
`

// httpGet sends one keep-alive request on c and returns the answering pod.
func httpGet(c net.Conn, r *bufio.Reader) (string, error) {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: web\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	return resp.Header.Get("X-Loupe-Pod"), nil
}

// TestPrivilegedLabServices: Services through their ClusterIPs on a lab of
// two nodes, with a default-deny egress policy and an allow to app=web:
// the client reaches web through the ClusterIP, a pod without the allow is
// refused, and a backend removed by `lab apply` gets no new connection 1 s
// later while an established one to it stays up.
func TestPrivilegedLabServices(t *testing.T) {
	tl := newTestLab(t)
	mf := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(mf, []byte(svcLabManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	tl.up("--nodes", "2", "-f", mf)

	st := tl.status()
	if len(st.Services) != 1 {
		t.Fatalf("status services: %+v", st.Services)
	}
	s := st.Services[0]
	vip, err := netip.ParseAddr(s.ClusterIP)
	if err != nil || s.Namespace != "shop" || s.Name != "web" || !strings.HasPrefix(s.ClusterIP, "10.96.") ||
		len(s.Ports) != 1 || s.Ports[0] != (ServicePortStatus{Name: "http", Port: 80, TargetPort: "http", Protocol: "TCP"}) {
		t.Fatalf("status service %+v", s)
	}

	if out, _, code := tl.run("probe", "--from", "shop/client", "--to", "svc/shop/web", "--port", "80"); code != 0 {
		t.Fatalf("client through the ClusterIP: exit %d: %s\n%s", code, out, tl.logs())
	}
	if out, _, code := tl.run("probe", "--from", "shop/stranger", "--to", "svc/shop/web", "--port", "80", "--timeout", "500ms"); code != 1 {
		t.Fatalf("a pod without the egress allow: exit %d, want 1: %s", code, out)
	}

	// policy explain agrees with both.
	if got := tl.explain(t, "shop/client", "svc/shop/web", "80"); !strings.HasSuffix(got, ": ALLOWED") {
		t.Errorf("explain for the client: %q", got)
	}
	if got := tl.explain(t, "shop/stranger", "svc/shop/web", "80"); !strings.HasSuffix(got, ": DENIED") {
		t.Errorf("explain for the stranger: %q", got)
	}

	// An established connection to web1, through the ClusterIP.
	clientNS := netnsPath(tl.name + "-shop.client")
	addr := netip.AddrPortFrom(vip, 80).String()
	var keep net.Conn
	var keepR *bufio.Reader
	for i := 0; i < 40 && keep == nil; i++ {
		c, err := dialIn(context.Background(), clientNS, "tcp4", addr, 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		pod, err := httpGet(c, r)
		if err == nil && pod == "shop/web1" {
			keep, keepR = c, r
		} else {
			t.Logf("connection %d: %q %v", i, pod, err)
			c.Close()
		}
	}
	if keep == nil {
		t.Fatal("no connection reached web1 in 40 tries")
	}
	defer keep.Close()

	// web1 leaves the Service (policy still allows it: its connection is
	// not cut for policy).
	relabel := filepath.Join(t.TempDir(), "relabel.yaml")
	os.WriteFile(relabel, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: web1, namespace: shop, labels: {app: web, serving: \"no\"}}\nspec: {containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}\n"), 0o644)
	tl.mustRun("apply", "-f", relabel)
	time.Sleep(time.Second)
	for i := 0; i < 20; i++ {
		c, err := dialIn(context.Background(), clientNS, "tcp4", addr, 2*time.Second)
		if err != nil {
			t.Fatalf("new connection %d: %v", i, err)
		}
		pod, err := httpGet(c, bufio.NewReader(c))
		c.Close()
		if err != nil || pod != "shop/web2" {
			t.Fatalf("new connection %d 1 s after apply: answered by %q (%v), want web2", i, pod, err)
		}
	}
	if pod, err := httpGet(keep, keepR); err != nil || pod != "shop/web1" {
		t.Fatalf("established connection to the removed backend: %q %v", pod, err)
	}
}
