package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

func TestObserveUnreachable(t *testing.T) {
	addr := closedAddr(t)
	_, _, err := run(t, NewObserveCommand(), "--server", addr)
	if err == nil {
		t.Fatal("no error from a closed port")
	}
	want := "cannot reach " + addr + ": is loupe-relay running? try --server"
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\ndoes not start with %q", err, want)
	}
	if !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error %q hides the cause", err)
	}
	// The same advice from status and list.
	for _, cmd := range [][]string{{"status"}, {"list", "nodes"}, {"list", "namespaces"}} {
		c := NewStatusCommand()
		args := []string{"--server", addr}
		if cmd[0] == "list" {
			c = NewListCommand()
			args = append([]string{cmd[1]}, args...)
		}
		_, _, err := run(t, c, args...)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%v: error %v", cmd, err)
		}
	}
}

func TestServerFromEnv(t *testing.T) {
	fake := &fakeObserver{responses: fixtureResponses()[:1]}
	addr := startFake(t, fake)
	t.Setenv("LOUPE_SERVER", addr)
	out, _, err := run(t, NewObserveCommand())
	if err != nil {
		t.Fatalf("LOUPE_SERVER=%s: %v", addr, err)
	}
	if out == "" {
		t.Error("no flow printed")
	}
	fake.takeRequest(t)
	// --server wins over the environment.
	closed := closedAddr(t)
	_, _, err = run(t, NewObserveCommand(), "--server", closed)
	if err == nil || !strings.Contains(err.Error(), closed) {
		t.Errorf("--server did not override LOUPE_SERVER: %v", err)
	}
}

func TestServerUnixSocket(t *testing.T) {
	fake := &fakeObserver{responses: fixtureResponses()[:1]}
	target := startFakeUnix(t, fake)
	for _, server := range []string{target, strings.TrimPrefix(target, "unix://")} {
		out, _, err := run(t, NewObserveCommand(), "--server", server)
		if err != nil {
			t.Fatalf("--server %s: %v", server, err)
		}
		if out == "" {
			t.Errorf("--server %s: no flow", server)
		}
		fake.takeRequest(t)
	}
}

func TestServerBadAddress(t *testing.T) {
	for _, server := range []string{"http://localhost:4245", "unix://", ""} {
		_, _, err := run(t, NewObserveCommand(), "--server", server)
		if err == nil || !strings.Contains(err.Error(), "server") {
			t.Errorf("--server %q: error %v", server, err)
		}
	}
}

// testPKI writes a CA, a server certificate for 127.0.0.1 and
// observer.loupe.test, and a client certificate, all as PEM files.
type testPKI struct {
	dir                           string
	caFile, clientCert, clientKey string
	serverTLS                     *tls.Config
	caPool                        *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loupe test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{cn},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	}
	p := &testPKI{dir: dir, caPool: x509.NewCertPool()}
	p.caPool.AddCert(ca)
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	p.caFile = write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	sc, sk := issue(2, "observer.loupe.test", x509.ExtKeyUsageServerAuth)
	cc, ck := issue(3, "loupe-cli", x509.ExtKeyUsageClientAuth)
	p.clientCert, p.clientKey = write("client.pem", cc), write("client-key.pem", ck)
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	p.serverTLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	return p
}

func TestServerTLS(t *testing.T) {
	pki := newTestPKI(t)
	fake := &fakeObserver{responses: fixtureResponses()[:1]}
	addr := startFakeTLS(t, fake, credentials.NewTLS(pki.serverTLS))

	ok := func(args ...string) {
		t.Helper()
		out, _, err := run(t, NewObserveCommand(), append([]string{"--server", addr}, args...)...)
		if err != nil || out == "" {
			t.Fatalf("%v: err %v, out %q", args, err, out)
		}
		fake.takeRequest(t)
	}
	ok("--tls", "--tls-ca-cert-files", pki.caFile, "--tls-server-name", "observer.loupe.test")
	ok("--tls", "--tls-allow-insecure")
	addrTLS := "tls://" + addr
	out, _, err := run(t, NewObserveCommand(), "--server", addrTLS, "--tls-ca-cert-files", pki.caFile, "--tls-server-name", "observer.loupe.test")
	if err != nil || out == "" {
		t.Fatalf("tls:// prefix: %v", err)
	}
	fake.takeRequest(t)

	// An unknown CA fails with advice about the TLS flags.
	_, _, err = run(t, NewObserveCommand(), "--server", addr, "--tls", "--tls-server-name", "observer.loupe.test")
	if err == nil || !strings.Contains(err.Error(), "over TLS") || !strings.Contains(err.Error(), "--tls-ca-cert-files") {
		t.Errorf("unknown CA: %v", err)
	}
	// Plain text against a TLS server fails too.
	if _, _, err = run(t, NewObserveCommand(), "--server", addr); err == nil {
		t.Error("plain text reached a TLS server")
	}
	// A cert without its key is a usage error.
	_, _, err = run(t, NewObserveCommand(), "--server", addr, "--tls-client-cert-file", pki.clientCert)
	if err == nil || !strings.Contains(err.Error(), "must be given together") {
		t.Errorf("cert without key: %v", err)
	}
}

func TestServerMutualTLS(t *testing.T) {
	pki := newTestPKI(t)
	cfg := pki.serverTLS.Clone()
	cfg.ClientAuth = tls.RequireAndVerifyClientCert
	cfg.ClientCAs = pki.caPool
	fake := &fakeObserver{responses: fixtureResponses()[:1]}
	addr := startFakeTLS(t, fake, credentials.NewTLS(cfg))

	base := []string{"--server", addr, "--tls-ca-cert-files", pki.caFile, "--tls-server-name", "observer.loupe.test"}
	// A client certificate implies TLS.
	out, _, err := run(t, NewObserveCommand(), append(base, "--tls-client-cert-file", pki.clientCert, "--tls-client-key-file", pki.clientKey)...)
	if err != nil || out == "" {
		t.Fatalf("mTLS: %v", err)
	}
	fake.takeRequest(t)
	if _, _, err := run(t, NewObserveCommand(), append(base, "--tls")...); err == nil {
		t.Error("no client certificate, yet the server answered")
	}
}
