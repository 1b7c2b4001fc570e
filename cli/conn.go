package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/tlsreload"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// defaultServer is loupe-relay's (and Hubble Relay's) address.
var defaultServer = net.JoinHostPort("localhost", strconv.Itoa(contract.RelayPort))

// portsHint names the ports of the relay and the agents, for help and errors.
var portsHint = fmt.Sprintf("loupe-relay :%d, a loupe-agent :%d", contract.RelayPort, contract.ObserverPort)

const (
	// serverEnv overrides defaultServer, as HUBBLE_SERVER does for hubble.
	serverEnv = "LOUPE_SERVER"
	tlsPrefix = "tls://"
)

// serverOptions are the flags that say how to reach a Hubble API server:
// loupe-relay, one loupe-agent, or a Cilium cluster's Hubble Relay.
type serverOptions struct {
	server           string
	timeout          time.Duration
	requestTimeout   time.Duration
	tls              bool
	tlsAllowInsecure bool
	tlsCAFiles       []string
	tlsCertFile      string
	tlsKeyFile       string
	tlsServerName    string

	flags *pflag.FlagSet
}

func (o *serverOptions) addFlags(fs *pflag.FlagSet) {
	o.flags = fs
	fs.StringVar(&o.server, "server", defaultServer,
		"Hubble API server: host:port, unix:///path/to.sock, or tls://host:port "+
			"("+portsHint+"; env "+serverEnv+")")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Second, "How long to try to connect to the server")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 12*time.Second,
		"Timeout of one-shot requests (status, list); streams of flows have none")
	fs.BoolVar(&o.tls, "tls", false, "Connect with TLS (implied by a tls:// server or a client certificate)")
	fs.BoolVar(&o.tlsAllowInsecure, "tls-allow-insecure", false,
		"Do not verify the server's certificate (not recommended)")
	fs.StringSliceVar(&o.tlsCAFiles, "tls-ca-cert-files", nil,
		"PEM files of the CAs that sign the server's certificate (default: the system's)")
	fs.StringVar(&o.tlsCertFile, "tls-client-cert-file", "", "PEM file of the client certificate, for mTLS")
	fs.StringVar(&o.tlsKeyFile, "tls-client-key-file", "", "PEM file of the client certificate's private key, for mTLS")
	fs.StringVar(&o.tlsServerName, "tls-server-name", "",
		"Name to verify in the server's certificate (e.g. relay.loupe.local)")
}

// address returns the server to use: --server if given, else $LOUPE_SERVER,
// else the default.
func (o *serverOptions) address() string {
	if o.flags != nil && !o.flags.Changed("server") {
		if env := strings.TrimSpace(os.Getenv(serverEnv)); env != "" {
			return env
		}
	}
	return o.server
}

// target turns a --server value into a gRPC target and whether it asks for TLS.
func target(addr string) (string, bool, error) {
	addr = strings.TrimSpace(addr)
	useTLS := false
	if rest, ok := strings.CutPrefix(addr, tlsPrefix); ok {
		addr, useTLS = rest, true
	}
	switch {
	case addr == "":
		return "", false, errors.New("empty --server: want host:port or unix:///path")
	case strings.HasPrefix(addr, "/"):
		return "unix://" + addr, useTLS, nil
	case strings.HasPrefix(addr, "unix:"):
		if strings.TrimPrefix(strings.TrimPrefix(addr, "unix:"), "//") == "" {
			return "", false, fmt.Errorf("invalid --server %q: want unix:///path/to.sock", addr)
		}
		return addr, useTLS, nil
	case strings.Contains(addr, "://"):
		return "", false, fmt.Errorf("invalid --server %q: want host:port, unix:///path or tls://host:port", addr)
	}
	return addr, useTLS, nil
}

func (o *serverOptions) transportCredentials(useTLS bool) (grpc.DialOption, error) {
	if (o.tlsCertFile == "") != (o.tlsKeyFile == "") {
		return nil, errors.New("--tls-client-cert-file and --tls-client-key-file must be given together")
	}
	if !useTLS && !o.tls && o.tlsCertFile == "" {
		return grpc.WithTransportCredentials(insecure.NewCredentials()), nil
	}
	cfg := &tls.Config{
		MinVersion:         tlsreload.MinVersion, // as Hubble
		ServerName:         o.tlsServerName,
		InsecureSkipVerify: o.tlsAllowInsecure, //nolint:gosec // the user asked for it
	}
	if len(o.tlsCAFiles) > 0 {
		pool := x509.NewCertPool()
		for _, f := range o.tlsCAFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("read --tls-ca-cert-files: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("read --tls-ca-cert-files: %s holds no PEM certificate", f)
			}
		}
		cfg.RootCAs = pool
	}
	if o.tlsCertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCertFile, o.tlsKeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(cfg)), nil
}

// dial creates a client for the server. gRPC connects lazily: errors
// reaching it show up on the first call, and explain turns them into advice.
func (o *serverOptions) dial() (*grpc.ClientConn, error) {
	addr := o.address()
	tgt, useTLS, err := target(addr)
	if err != nil {
		return nil, err
	}
	creds, err := o.transportCredentials(useTLS)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(tgt, creds,
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: o.timeout}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		grpc.WithUserAgent("loupe-cli"))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return conn, nil
}

// explain turns an RPC error into a message that says what to do. started
// tells whether the call had already received something (a broken stream
// rather than a server that cannot be reached).
func (o *serverOptions) explain(err error, started bool) error {
	if err == nil {
		return nil
	}
	addr := o.address()
	st, ok := status.FromError(err)
	if !ok {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("%s did not answer in time: %w", addr, err)
		}
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.Unavailable:
		if started {
			return fmt.Errorf("lost the connection to %s: %s", addr, msg)
		}
		if strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:") || strings.Contains(msg, "handshake") {
			return fmt.Errorf("cannot reach %s over TLS: %s (check --tls-ca-cert-files, --tls-server-name, --tls-client-cert-file/--tls-client-key-file)", addr, msg)
		}
		return fmt.Errorf("cannot reach %s: is loupe-relay running? try --server HOST:PORT (%s, or unix:///path), or set %s; gRPC said: %s",
			addr, portsHint, serverEnv, msg)
	case codes.DeadlineExceeded:
		if !started {
			return fmt.Errorf("cannot reach %s: no answer within the timeout; is loupe-relay running? try --server HOST:PORT or a larger --timeout/--request-timeout", addr)
		}
		return fmt.Errorf("%s: %s", addr, msg)
	case codes.Unimplemented:
		return fmt.Errorf("%s does not serve this call (is it a Hubble API server, i.e. loupe-relay, loupe-agent or Hubble Relay?): %s", addr, msg)
	case codes.InvalidArgument:
		return fmt.Errorf("%s rejected the request: %s", addr, msg)
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("%s refused us (%s): %s; check the --tls-* flags", addr, st.Code(), msg)
	}
	return fmt.Errorf("%s: %s: %s", addr, st.Code(), msg)
}
