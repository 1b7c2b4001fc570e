package tlsreload

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
	"testing"
	"time"
)

func selfSigned(t *testing.T, cn string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{cn}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

func served(t *testing.T, tc *tls.Config) string {
	t.Helper()
	c, err := tc.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	if c.MinVersion != tls.VersionTLS13 {
		t.Errorf("min version %x, want TLS 1.3", c.MinVersion)
	}
	leaf, err := x509.ParseCertificate(c.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

// A rotation shows at the next handshake; one caught half-written (a new
// certificate beside the old key) keeps the last good pair in service
// until the key arrives.
func TestServerReloads(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c1, k1 := selfSigned(t, "one")
	os.WriteFile(cf, c1, 0o600)
	os.WriteFile(kf, k1, 0o600)
	tc, err := ServerConfig(Files{Cert: cf, Key: kf})
	if err != nil {
		t.Fatal(err)
	}
	if got := served(t, tc); got != "one" {
		t.Fatalf("serves %q", got)
	}
	c2, k2 := selfSigned(t, "two")
	os.WriteFile(cf, c2, 0o600) // the key is not there yet
	if got := served(t, tc); got != "one" {
		t.Errorf("half-written rotation: serves %q, want the old pair", got)
	}
	os.WriteFile(kf, k2, 0o600)
	if got := served(t, tc); got != "two" {
		t.Errorf("after the rotation: serves %q", got)
	}
	os.Remove(cf)
	if got := served(t, tc); got != "two" {
		t.Errorf("files gone: serves %q, want the last good pair", got)
	}
	if _, err := ServerConfig(Files{Cert: cf, Key: kf}); err == nil {
		t.Error("a server without its certificate started")
	}
}

// The servers speak TLS 1.3 only: a client capped at TLS 1.2 fails the
// handshake, and one that allows 1.3 succeeds.
func TestServerRefusesTLS12(t *testing.T) {
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c, k := selfSigned(t, "one")
	os.WriteFile(cf, c, 0o600)
	os.WriteFile(kf, k, 0o600)
	tc, err := ServerConfig(Files{Cert: cf, Key: kf})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { _ = conn.(*tls.Conn).Handshake(); conn.Close() }()
		}
	}()
	for _, max := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{InsecureSkipVerify: true, MaxVersion: max}) //nolint:gosec // only the version is under test
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != (max == tls.VersionTLS13) {
			t.Errorf("client with max version %x: %v", max, err)
		}
	}
}
