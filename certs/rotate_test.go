package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/loupe-project/loupe/certs"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/testtools"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/relay"
)

// agentPeer names the test agent the way the relay's Node list does, so
// that its certificate is checked for Hubble's per-node name.
type agentPeer struct{ addr string }

func (a agentPeer) Run(ctx context.Context, sink relay.PeerSink) error {
	if err := sink.Upsert("node-1", "node-1", a.addr, contract.TLSServerName("node-1")); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// clientTLS is a CLI's TLS from `loupe certs` files: its client
// certificate, and the CA it trusts.
func clientTLS(t *testing.T, dir, pair, serverName string) *tls.Config {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, pair+".crt"), filepath.Join(dir, pair+".key"))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS13}
}

// serverStatus asks addr over mTLS with tc and returns the connected nodes.
func serverStatus(ctx context.Context, addr string, tc *tls.Config) (uint32, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := observerpb.NewObserverClient(conn).ServerStatus(ctx, &observerpb.ServerStatusRequest{})
	return st.GetNumConnectedNodes().GetValue(), err
}

func startAgent(t *testing.T, ctx context.Context, dir string, lis net.Listener) (stop func()) {
	t.Helper()
	o, err := observer.New(observer.Config{NodeName: "node-1", TLS: observer.TLSConfig{
		CertFile: filepath.Join(dir, "agent.crt"), KeyFile: filepath.Join(dir, "agent.key"),
		ClientCAFile: filepath.Join(dir, "ca.crt")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- o.ServeListeners(ctx, lis, nil) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("agent: %v", err)
		}
	}
}

func waitFor(t *testing.T, what string, f func() error) {
	t.Helper()
	var err error
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	t.Fatalf("%s: %v", what, err)
}

// Certificates from `loupe certs` are replaced on disk (a new CA and
// everything it signs, as `loupe certs --force` or a rotated Secret does)
// under a running agent and relay. Clients holding the new files connect to
// both without a restart; clients holding the old CA no longer do; the
// relay reaches an agent serving the new certificate with its reloaded
// client certificate; and the stock hubble CLI reads the relay with them.
func TestRotationUnderRunningAgentAndRelay(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	oldSet, err := certs.Generate(certs.Options{RelayNames: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := oldSet.WriteFiles(dir, false); err != nil {
		t.Fatal(err)
	}
	old := t.TempDir() // the old files, as a client that kept them has
	if err := oldSet.WriteFiles(old, false); err != nil {
		t.Fatal(err)
	}

	agentLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agentAddr := agentLis.Addr().String()
	stopAgent := startAgent(t, ctx, dir, agentLis)

	cfg := relay.Config{Lab: true}
	if cfg.ClientTLS, err = relay.ClientTLSConfig(filepath.Join(dir, "relay-client.crt"), filepath.Join(dir, "relay-client.key"), []string{filepath.Join(dir, "ca.crt")}); err != nil {
		t.Fatal(err)
	}
	if cfg.ServerTLS, err = relay.ServerTLSConfig(filepath.Join(dir, "relay.crt"), filepath.Join(dir, "relay.key"), []string{filepath.Join(dir, "ca.crt")}); err != nil {
		t.Fatal(err)
	}
	srv, err := relay.New(cfg, agentPeer{agentAddr})
	if err != nil {
		t.Fatal(err)
	}
	relayLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	relayAddr := relayLis.Addr().String()
	rctx, rcancel := context.WithCancel(ctx)
	relayDone := make(chan error, 1)
	go func() { relayDone <- srv.Serve(rctx, relayLis) }()
	t.Cleanup(func() {
		rcancel()
		if err := <-relayDone; err != nil {
			t.Errorf("relay: %v", err)
		}
	})

	const relayName = "instance.hubble-relay.cilium.io"
	agentName := contract.TLSServerName("node-1")
	waitFor(t, "relay connected to the agent with the first certificates", func() error {
		n, err := serverStatus(ctx, relayAddr, clientTLS(t, dir, "client", relayName))
		if err == nil && n != 1 {
			err = fmt.Errorf("%d connected nodes, want 1", n)
		}
		return err
	})

	// Rotate: a new CA and everything it signs, written over the old files.
	newSet, err := certs.Generate(certs.Options{RelayNames: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := newSet.WriteFiles(dir, true); err != nil {
		t.Fatal(err)
	}

	// The running relay and agent serve the new certificates and accept the
	// new client certificate.
	if n, err := serverStatus(ctx, relayAddr, clientTLS(t, dir, "client", relayName)); err != nil || n != 1 {
		t.Fatalf("relay with the new CA and client certificate: %d nodes, %v", n, err)
	}
	if _, err := serverStatus(ctx, agentAddr, clientTLS(t, dir, "relay-client", agentName)); err != nil {
		t.Fatalf("agent with the new CA and client certificate: %v", err)
	}
	// Old files: the servers' new certificates fail the old CA.
	if _, err := serverStatus(ctx, relayAddr, clientTLS(t, old, "client", relayName)); err == nil {
		t.Error("relay still accepted a client with the old CA")
	}
	if _, err := serverStatus(ctx, agentAddr, clientTLS(t, old, "relay-client", agentName)); err == nil {
		t.Error("agent still accepted a client with the old CA")
	}
	// A client with the new CA but the old client certificate is refused:
	// the client CA was reloaded too.
	mixed := clientTLS(t, dir, "client", relayName)
	oldCert, _ := tls.LoadX509KeyPair(filepath.Join(old, "client.crt"), filepath.Join(old, "client.key"))
	mixed.Certificates = []tls.Certificate{oldCert}
	if _, err := serverStatus(ctx, relayAddr, mixed); err == nil {
		t.Error("relay accepted a client certificate of the old CA")
	}

	// The agent restarts on the same address (its process is not the
	// subject here): the relay's next connection must present its reloaded
	// client certificate and trust the new CA, or it would stay disconnected.
	stopAgent()
	agentLis, err = net.Listen("tcp", agentAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(startAgent(t, ctx, dir, agentLis))
	waitFor(t, "relay reconnected to the agent with its reloaded client files", func() error {
		n, err := serverStatus(ctx, relayAddr, clientTLS(t, dir, "client", relayName))
		if err == nil && n != 1 {
			err = fmt.Errorf("%d connected nodes, want 1", n)
		}
		return err
	})

	// The stock hubble CLI, with the new files and Hubble's relay name.
	hubble := testtools.Hubble(t, "hubble")
	out, err := exec.CommandContext(ctx, hubble, "status", "--tls", "--server", relayAddr,
		"--tls-ca-cert-files", filepath.Join(dir, "ca.crt"),
		"--tls-client-cert-file", filepath.Join(dir, "client.crt"),
		"--tls-client-key-file", filepath.Join(dir, "client.key"),
		"--tls-server-name", relayName).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Connected Nodes: 1/1") {
		t.Fatalf("hubble status through the relay with the new files: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, hubble, "status", "--tls", "--server", relayAddr,
		"--tls-ca-cert-files", filepath.Join(old, "ca.crt"),
		"--tls-client-cert-file", filepath.Join(old, "client.crt"),
		"--tls-client-key-file", filepath.Join(old, "client.key"),
		"--tls-server-name", relayName, "--timeout", "2s").CombinedOutput()
	if err == nil {
		t.Errorf("hubble status with the old files succeeded:\n%s", out)
	}
}
