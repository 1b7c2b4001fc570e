package certs

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/loupe-project/loupe/contract"
)

func parse(t *testing.T, p Pair) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(p.Cert)
	if b == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Each certificate verifies against the CA for the name and usage Hubble
// checks: agents for <node>.default.hubble-grpc.cilium.io, the relay for
// *.hubble-relay.cilium.io and the extra names, the clients as clients.
func TestGenerateHubbleNames(t *testing.T) {
	s, err := Generate(Options{RelayNames: []string{"loupe-relay.kube-system.svc", "127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(parse(t, s.CA))
	for _, c := range []struct {
		name  string
		p     Pair
		dns   string
		usage x509.ExtKeyUsage
	}{
		{"agent", s.Agent, contract.TLSServerName("node-1.zone-a"), x509.ExtKeyUsageServerAuth},
		{"relay", s.Relay, "instance.hubble-relay.cilium.io", x509.ExtKeyUsageServerAuth},
		{"relay by service", s.Relay, "loupe-relay.kube-system.svc", x509.ExtKeyUsageServerAuth},
		{"relay by ip", s.Relay, "127.0.0.1", x509.ExtKeyUsageServerAuth},
		{"relay client", s.RelayClient, "", x509.ExtKeyUsageClientAuth},
		{"cli client", s.Client, "", x509.ExtKeyUsageClientAuth},
	} {
		if _, err := parse(t, c.p).Verify(x509.VerifyOptions{Roots: roots, DNSName: c.dns, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// A server certificate is no client certificate, and the other way round.
	if _, err := parse(t, s.Agent).Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("the agent's server certificate passes as a client certificate")
	}
	if _, err := parse(t, s.Client).Verify(x509.VerifyOptions{Roots: roots, DNSName: "instance.hubble-relay.cilium.io"}); err == nil {
		t.Error("the CLI's client certificate passes as the relay's")
	}
}

func TestWriteFiles(t *testing.T) {
	s, err := Generate(Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "certs")
	if err := s.WriteFiles(dir, false); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CAName, AgentName, RelayName, RelayClientName, ClientName} {
		for ext, mode := range map[string]os.FileMode{".crt": 0o644, ".key": 0o600} {
			fi, err := os.Stat(filepath.Join(dir, name+ext))
			if err != nil || fi.Mode().Perm() != mode {
				t.Errorf("%s%s: %v, mode %v, want %v", name, ext, err, fi.Mode().Perm(), mode)
			}
		}
	}
	if err := s.WriteFiles(dir, false); !errors.Is(err, errExists) {
		t.Errorf("second write without force: %v, want it refused", err)
	}
	if err := s.WriteFiles(dir, true); err != nil {
		t.Errorf("with force: %v", err)
	}
}

// The install Job runs again on every apply: the first run writes the
// Secrets, a rerun keeps them, --force replaces them.
func TestWriteSecrets(t *testing.T) {
	ctx := context.Background()
	c := fake.NewClientset()
	first, _ := Generate(Options{})
	if wrote, err := first.WriteSecrets(ctx, c, "kube-system", false); err != nil || !wrote {
		t.Fatalf("first run: %v, %v", wrote, err)
	}
	list, _ := c.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	var names []string
	for _, s := range list.Items {
		names = append(names, s.Name)
		if s.Name != CASecret && (len(s.Data["tls.crt"]) == 0 || len(s.Data["tls.key"]) == 0 || string(s.Data["ca.crt"]) != string(first.CA.Cert)) {
			t.Errorf("secret %s lacks tls.crt, tls.key or the CA", s.Name)
		}
	}
	slices.Sort(names)
	if want := []string{AgentSecret, CASecret, ClientSecret, RelayClientSecret, RelaySecret}; !slices.Equal(names, want) {
		t.Errorf("secrets %v, want %v", names, want)
	}
	second, _ := Generate(Options{})
	if wrote, err := second.WriteSecrets(ctx, c, "kube-system", false); err != nil || wrote {
		t.Fatalf("rerun: %v, %v; want the Secrets kept", wrote, err)
	}
	got, _ := c.CoreV1().Secrets("kube-system").Get(ctx, AgentSecret, metav1.GetOptions{})
	if string(got.Data["tls.crt"]) != string(first.Agent.Cert) {
		t.Error("a rerun replaced the agent's certificate")
	}
	if wrote, err := second.WriteSecrets(ctx, c, "kube-system", true); err != nil || !wrote {
		t.Fatalf("force: %v, %v", wrote, err)
	}
	got, _ = c.CoreV1().Secrets("kube-system").Get(ctx, AgentSecret, metav1.GetOptions{})
	if string(got.Data["tls.crt"]) != string(second.Agent.Cert) {
		t.Error("--force kept the old certificate")
	}
}
