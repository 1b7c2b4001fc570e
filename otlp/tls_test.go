package otlp

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loupe-project/loupe/otlp/otlptest"
	"github.com/loupe-project/loupe/relay/relaytest"
)

type tlsFiles struct{ ca, cert, key string }

// collectorTLS issues a collector certificate for collector.test and a
// client certificate, both from one CA, and returns the collector's
// server config (mTLS) with the TLS version of its last handshake.
func collectorTLS(t *testing.T, maxVersion uint16) (*tls.Config, tlsFiles, *atomic.Uint32) {
	t.Helper()
	dir := t.TempDir()
	ca, err := relaytest.NewCA("otlp-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Issue("collector", "collector.test")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ca.Issue("loupe-agent")
	if err != nil {
		t.Fatal(err)
	}
	f := tlsFiles{ca: filepath.Join(dir, "ca.pem")}
	if err := os.WriteFile(f.ca, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if f.cert, f.key, err = cl.WriteFiles(dir, "client"); err != nil {
		t.Fatal(err)
	}
	pair, err := srv.TLS()
	if err != nil {
		t.Fatal(err)
	}
	var version atomic.Uint32
	return &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert,
		MaxVersion: maxVersion,
		VerifyConnection: func(cs tls.ConnectionState) error {
			version.Store(uint32(cs.Version))
			return nil
		}}, f, &version
}

// TLS is the default: mTLS with the CA and client certificate flags, TLS
// 1.3 when the collector speaks it, 1.2 when it speaks nothing newer.
func TestMutualTLS(t *testing.T) {
	for _, c := range []struct {
		name       string
		maxVersion uint16
		want       uint16
	}{{"tls1.3", 0, tls.VersionTLS13}, {"tls1.2-only collector", tls.VersionTLS12, tls.VersionTLS12}} {
		t.Run(c.name, func(t *testing.T) {
			stc, files, version := collectorTLS(t, c.maxVersion)
			r := otlptest.Start(t, "127.0.0.1:0", stc)
			cfg := testConfig(r)
			cfg.Insecure, cfg.CAFile, cfg.ClientCertFile, cfg.ClientKeyFile, cfg.ServerName = false, files.ca, files.cert, files.key, "collector.test"
			e := run(t, cfg)
			e.Flow(l4Flow(0))
			otlptest.WaitFor(t, 10*time.Second, "the record over mTLS", func() bool { return len(r.LogRecords()) == 1 })
			if v := uint16(version.Load()); v != c.want {
				t.Errorf("TLS version %x, want %x", v, c.want)
			}
		})
	}
}

// Without a client certificate the collector refuses the connection:
// nothing arrives and the flow is counted as dropped.
func TestTLSWithoutClientCertificateDrops(t *testing.T) {
	stc, files, _ := collectorTLS(t, 0)
	r := otlptest.Start(t, "127.0.0.1:0", stc)
	cfg := testConfig(r)
	cfg.Insecure, cfg.CAFile, cfg.ServerName, cfg.RetryMaxElapsed = false, files.ca, "collector.test", 500*time.Millisecond
	e := run(t, cfg)
	e.Flow(l4Flow(0))
	otlptest.WaitFor(t, 10*time.Second, "the flow dropped", func() bool { return e.Stats().Dropped == 1 })
	if n := len(r.LogRecords()); n != 0 {
		t.Fatalf("%d records arrived without a client certificate", n)
	}
}
