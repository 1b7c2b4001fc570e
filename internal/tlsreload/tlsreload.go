// Package tlsreload serves and dials TLS 1.3 from certificate files that
// may be rotated under a running process (a Kubernetes Secret volume swaps
// its files in place). Every handshake checks whether the files changed and
// reloads them first, so new certificates and CAs apply to the next
// connection without a restart. A rotation caught half-written (a key that
// does not match its certificate yet) keeps the last good files in use.
package tlsreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc/credentials"
)

// MinVersion is the lowest TLS version loupe speaks, as Hubble does.
const MinVersion = tls.VersionTLS13

// Files names a certificate, its key and CA certificates. Any may be empty.
type Files struct {
	Cert string
	Key  string
	CAs  []string
}

// loaded is one generation of the files' contents.
type loaded struct {
	cert *tls.Certificate // nil without Cert
	pool *x509.CertPool   // nil without CAs
}

// source holds the last good contents and the stamp of the files they came from.
type source struct {
	files Files

	mu    sync.Mutex
	stamp []fileStamp
	cur   loaded
	err   error // of the last reload that failed, kept until one succeeds
}

type fileStamp struct {
	mod  time.Time
	size int64
	ino  uint64
}

func newSource(f Files) (*source, error) {
	if (f.Cert == "") != (f.Key == "") {
		return nil, errors.New("a certificate and its key go together")
	}
	s := &source{files: f}
	st, err := s.stat()
	if err != nil {
		return nil, err
	}
	if s.cur, err = f.load(); err != nil {
		return nil, err
	}
	s.stamp = st
	return s, nil
}

func (f Files) names() []string {
	var n []string
	for _, p := range append([]string{f.Cert, f.Key}, f.CAs...) {
		if p != "" {
			n = append(n, p)
		}
	}
	return n
}

func (s *source) stat() ([]fileStamp, error) {
	var out []fileStamp
	for _, p := range s.files.names() {
		fi, err := os.Stat(p) // follows the symlinks a Secret volume swaps
		if err != nil {
			return nil, err
		}
		st := fileStamp{mod: fi.ModTime(), size: fi.Size()}
		if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
			st.ino = sys.Ino
		}
		out = append(out, st)
	}
	return out, nil
}

func (f Files) load() (loaded, error) {
	var l loaded
	if f.Cert != "" {
		c, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return l, fmt.Errorf("load key pair %s: %w", f.Cert, err)
		}
		l.cert = &c
	}
	if len(f.CAs) > 0 {
		l.pool = x509.NewCertPool()
		for _, p := range f.CAs {
			pem, err := os.ReadFile(p)
			if err != nil {
				return l, fmt.Errorf("read ca: %w", err)
			}
			if !l.pool.AppendCertsFromPEM(pem) {
				return l, fmt.Errorf("read ca %s: no PEM certificate found", p)
			}
		}
	}
	return l, nil
}

// current returns the files' contents, reloaded if any file changed since
// the last load. A failed reload keeps the previous contents.
func (s *source) current() loaded {
	st, err := s.stat()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil || slices.Equal(st, s.stamp) {
		return s.cur
	}
	l, err := s.files.load()
	if err != nil {
		s.err = err
		return s.cur
	}
	s.cur, s.stamp, s.err = l, st, nil
	return s.cur
}

// ServerConfig returns a TLS 1.3 server configuration that serves
// f.Cert and, with f.CAs, requires client certificates signed by them.
// Both are re-read when their files change.
func ServerConfig(f Files) (*tls.Config, error) {
	if f.Cert == "" {
		return nil, errors.New("a server needs a certificate and a key")
	}
	s, err := newSource(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: MinVersion,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			l := s.current()
			c := &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{*l.cert}}
			if l.pool != nil {
				c.ClientCAs = l.pool
				c.ClientAuth = tls.RequireAndVerifyClientCert
			}
			return c, nil
		},
	}, nil
}

// Client dials with f.Cert as the client certificate (mTLS, when set) and
// verifies servers against f.CAs (the system pool when empty), both
// re-read when their files change.
type Client struct {
	src *source
	// MinVersion, when set, lowers the TLS 1.3 minimum for peers loupe
	// does not run (the OTLP exporter's collectors).
	MinVersion uint16
}

// NewClient loads f once, so that bad files fail at start.
func NewClient(f Files) (*Client, error) {
	s, err := newSource(f)
	if err != nil {
		return nil, err
	}
	return &Client{src: s}, nil
}

// Config returns a TLS 1.3 client configuration from the current files.
func (c *Client) Config(serverName string) *tls.Config {
	l := c.src.current()
	tc := &tls.Config{MinVersion: MinVersion, RootCAs: l.pool, ServerName: serverName}
	if c.MinVersion != 0 {
		tc.MinVersion = c.MinVersion
	}
	if l.cert != nil {
		tc.Certificates = []tls.Certificate{*l.cert}
	}
	return tc
}

// Credentials returns gRPC transport credentials that build their TLS
// configuration from the current files at every handshake, so that a
// long-lived gRPC client picks up rotated files when it reconnects.
// serverName, when set, is the name checked in the server's certificate
// instead of the dialed address.
func (c *Client) Credentials(serverName string) credentials.TransportCredentials {
	return &clientCreds{c: c, serverName: serverName}
}

type clientCreds struct {
	c          *Client
	serverName string
}

func (cc *clientCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return credentials.NewTLS(cc.c.Config(cc.serverName)).ClientHandshake(ctx, authority, conn)
}

func (cc *clientCreds) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("tlsreload: client credentials cannot serve")
}

func (cc *clientCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", SecurityVersion: "1.3", ServerName: cc.serverName}
}

func (cc *clientCreds) Clone() credentials.TransportCredentials {
	c := *cc
	return &c
}

// OverrideServerName is part of credentials.TransportCredentials.
func (cc *clientCreds) OverrideServerName(name string) error {
	cc.serverName = name
	return nil
}
