package relay

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ClientTLSConfig builds the TLS configuration used to reach the agents.
// caFiles verify the agents' certificates (the system pool when empty); a
// certificate and key, when given, are presented for mTLS.
func ClientTLSConfig(certFile, keyFile string, caFiles []string) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return nil, errors.New("client tls: both a certificate and a key file are needed")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client tls: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if len(caFiles) > 0 {
		pool, err := loadCAs(caFiles)
		if err != nil {
			return nil, fmt.Errorf("client tls: %w", err)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// ServerTLSConfig builds the TLS configuration of the relay's own listener.
// With clientCAFiles, clients must present a certificate signed by them.
func ServerTLSConfig(certFile, keyFile string, clientCAFiles []string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("server tls: both a certificate and a key file are needed")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server tls: %w", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if len(clientCAFiles) > 0 {
		pool, err := loadCAs(clientCAFiles)
		if err != nil {
			return nil, fmt.Errorf("server tls: %w", err)
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

func loadCAs(files []string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	for _, f := range files {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("read ca %s: no PEM certificate found", f)
		}
	}
	return pool, nil
}
