package tlsreload

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkHandshake compares a full TLS 1.3 handshake with a static
// configuration and with the reloading one (which stats its files at every
// handshake), side by side in the same run.
func BenchmarkHandshake(b *testing.B) {
	dir := b.TempDir()
	cf, kf := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	c, k := selfSigned(&testing.T{}, "bench")
	os.WriteFile(cf, c, 0o600)
	os.WriteFile(kf, k, 0o600)
	pair, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		b.Fatal(err)
	}
	reloading, err := ServerConfig(Files{Cert: cf, Key: kf})
	if err != nil {
		b.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c)
	client := &tls.Config{RootCAs: pool, ServerName: "bench", MinVersion: tls.VersionTLS13}
	for name, server := range map[string]*tls.Config{
		"static":    {Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS13},
		"reloading": reloading,
	} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				cc, sc := net.Pipe()
				done := make(chan error, 1)
				go func() { done <- tls.Server(sc, server).Handshake() }()
				if err := tls.Client(cc, client).Handshake(); err != nil {
					b.Fatal(err)
				}
				if err := <-done; err != nil {
					b.Fatal(err)
				}
				cc.Close()
				sc.Close()
			}
		})
	}
}
