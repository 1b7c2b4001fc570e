package observer

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// With the agent's --tls-* files the TCP listener requires a client
// certificate from the CA (what Hubble Relay presents) and serves a
// certificate for Hubble's per-node name; the local unix socket stays plain.
func TestTLSListener(t *testing.T) {
	// Kubernetes allows dots in Node names; like Hubble, the name stays one
	// DNS label so *.default.hubble-grpc.cilium.io covers it.
	for node, want := range map[string]string{
		"node-1":                   "node-1.default.hubble-grpc.cilium.io",
		"ip-10-0-0-1.ec2.internal": "ip-10-0-0-1-ec2-internal.default.hubble-grpc.cilium.io",
	} {
		if got := contract.TLSServerName(node); got != want {
			t.Errorf("%s -> %q, want %q", node, got, want)
		}
	}
	dir := t.TempDir()
	ca, err := relaytest.NewCA("loupe-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	// One wildcard certificate for every node, as Hubble's certgen issues.
	const node = "node-1.zone-a"
	server, err := ca.Issue("hubble-server", "*.default.hubble-grpc.cilium.io")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := server.WriteFiles(dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	clientCert := clientCertificate(t, ca, "relay")
	other, err := relaytest.NewCA("other-ca")
	if err != nil {
		t.Fatal(err)
	}
	strangerCert := clientCertificate(t, other, "stranger")

	o, err := New(Config{NodeName: node, TLS: TLSConfig{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile}})
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "observer.sock")
	unixL, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.ServeListeners(ctx, tcp, unixL) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})

	status := func(addr string, creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{})
		return err
	}
	withCert := func(certs ...tls.Certificate) credentials.TransportCredentials {
		return credentials.NewTLS(&tls.Config{RootCAs: ca.Pool(), ServerName: contract.TLSServerName(node), Certificates: certs, MinVersion: tls.VersionTLS13})
	}
	addr := tcp.Addr().String()
	if err := status(addr, withCert(clientCert)); err != nil {
		t.Fatalf("mTLS client with the CA's certificate: %v", err)
	}
	for name, creds := range map[string]credentials.TransportCredentials{
		"plain text":                  insecure.NewCredentials(),
		"TLS without a certificate":   withCert(),
		"a certificate of another CA": withCert(strangerCert),
	} {
		if err := status(addr, creds); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := status("unix://"+sock, insecure.NewCredentials()); err != nil {
		t.Fatalf("the unix socket: %v", err)
	}
}

// clientCertificate issues a client certificate from ca.
func clientCertificate(t *testing.T, ca *relaytest.CA, cn string) tls.Certificate {
	t.Helper()
	p, err := ca.Issue(cn)
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.TLS()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestTLSConfigNeedsCertAndKey(t *testing.T) {
	for _, c := range []TLSConfig{{CertFile: "a.crt"}, {KeyFile: "a.key"}, {ClientCAFile: "ca.crt"}} {
		if _, err := New(Config{NodeName: "n", TLS: c}); err == nil || !strings.Contains(err.Error(), "tls:") {
			t.Errorf("%+v: want a tls: error, got %v", c, err)
		}
	}
}
