package observer

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// TLSConfig holds the server's TLS files. With CertFile and KeyFile the TCP
// listener speaks TLS 1.3; with ClientCAFile too, clients must present a
// certificate signed by that CA (mTLS). The zero value means plain text.
type TLSConfig struct {
	CertFile     string
	KeyFile      string
	ClientCAFile string
}

// Enabled reports whether TLS is configured.
func (c TLSConfig) Enabled() bool { return c.CertFile != "" }

func (c TLSConfig) validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("tls: cert and key files go together")
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		return errors.New("tls: a client CA needs a server cert and key")
	}
	return nil
}

// ServerConfig loads the files into a crypto/tls server configuration.
func (c TLSConfig) ServerConfig() (*tls.Config, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load key pair: %w", err)
	}
	tc := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS13,
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: read client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: no certificate in %s", c.ClientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
