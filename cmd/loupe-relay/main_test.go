package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// Agents found from the Node list are dialled by node IP; with TLS their
// certificates are checked for Hubble's per-node name, which no IP matches.
func TestNodePeersTLSServerName(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	if np := nodePeers(fake.NewClientset(), "4244", false, log); np.TLSServerName != nil {
		t.Fatal("plain text: a TLS server name is set")
	}
	np := nodePeers(fake.NewClientset(), "4244", true, log)
	if np.TLSServerName == nil {
		t.Fatal("TLS: no server name")
	}
	if got := np.TLSServerName("node-1"); got != "node-1.default.hubble-grpc.cilium.io" {
		t.Fatalf("TLS: server name %q", got)
	}
}

// The relay serves TCP with mTLS, or in plain text only when asked for by
// name; with neither it refuses to start, saying which flags it needs.
func TestRelayListenNeedsTLS(t *testing.T) {
	ca := []string{"ca.crt"}
	if l, err := relayListen(":4245", "", "s.crt", "s.key", ca); err != nil || l != ":4245" {
		t.Fatalf("--listen with mTLS: %q, %v", l, err)
	}
	if l, err := relayListen("", "10.0.0.1:4245", "", "", nil); err != nil || l != "10.0.0.1:4245" {
		t.Fatalf("--insecure-listen: %q, %v", l, err)
	}
	for name, c := range map[string]struct {
		listen, insecure, cert, key string
		cas                         []string
		want                        string
	}{
		"nothing":               {"", "", "", "", nil, "no listener: give --listen ADDR"},
		"listen without tls":    {":4245", "", "", "", nil, "needs --tls-server-cert-file, --tls-server-key-file and --tls-server-client-ca-files"},
		"listen without client": {":4245", "", "s.crt", "s.key", nil, "use --insecure-listen :4245 instead"},
		"both":                  {":4245", ":4246", "s.crt", "s.key", ca, "exclude each other"},
		"insecure with tls":     {"", ":4245", "s.crt", "s.key", nil, "go with --listen"},
	} {
		if _, err := relayListen(c.listen, c.insecure, c.cert, c.key, c.cas); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error containing %q, got %v", name, c.want, err)
		}
	}
}

// --pprof-listen serves the relay's profiler while it runs.
func TestRelayPprofListen(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := newCommand()
	cmd.SetArgs([]string{"--insecure-listen", freeAddr(t), "--peer", "127.0.0.1:1", "--lab", "--pprof-listen", addr})
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/debug/pprof/")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "goroutine") {
				t.Fatalf("/debug/pprof/: %s: %.200s", resp.Status, b)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("relay profiler not serving: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
