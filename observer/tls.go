package observer

import (
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/loupe-project/loupe/internal/tlsreload"
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

// ServerConfig loads the files into a TLS 1.3 server configuration that
// re-reads them when they change (rotated certificates and CAs apply to the
// next connection, without a restart).
func (c TLSConfig) ServerConfig() (*tls.Config, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	f := tlsreload.Files{Cert: c.CertFile, Key: c.KeyFile}
	if c.ClientCAFile != "" {
		f.CAs = []string{c.ClientCAFile}
	}
	tc, err := tlsreload.ServerConfig(f)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return tc, nil
}
