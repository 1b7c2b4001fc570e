package relay

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/loupe-project/loupe/internal/tlsreload"
)

// ClientTLSConfig builds the TLS 1.3 client used to reach the agents.
// caFiles verify the agents' certificates (the system pool when empty); a
// certificate and key, when given, are presented for mTLS. The files are
// re-read when they change, at each new connection.
func ClientTLSConfig(certFile, keyFile string, caFiles []string) (*tlsreload.Client, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("client tls: both a certificate and a key file are needed")
	}
	c, err := tlsreload.NewClient(tlsreload.Files{Cert: certFile, Key: keyFile, CAs: caFiles})
	if err != nil {
		return nil, fmt.Errorf("client tls: %w", err)
	}
	return c, nil
}

// ServerTLSConfig builds the TLS 1.3 configuration of the relay's own
// listener. With clientCAFiles, clients must present a certificate signed
// by them. The files are re-read when they change.
func ServerTLSConfig(certFile, keyFile string, clientCAFiles []string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("server tls: both a certificate and a key file are needed")
	}
	tc, err := tlsreload.ServerConfig(tlsreload.Files{Cert: certFile, Key: keyFile, CAs: clientCAFiles})
	if err != nil {
		return nil, fmt.Errorf("server tls: %w", err)
	}
	return tc, nil
}
