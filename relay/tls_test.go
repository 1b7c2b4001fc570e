package relay_test

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"

	"github.com/loupe-project/loupe/relay"
	"github.com/loupe-project/loupe/relay/relaytest"
)

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, err := relaytest.NewCA("loupe-test-ca")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	issue := func(cn string) (tls.Certificate, string, string) {
		p, err := ca.Issue(cn)
		if err != nil {
			t.Fatal(err)
		}
		c, err := p.TLS()
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile, err := p.WriteFiles(dir, cn)
		if err != nil {
			t.Fatal(err)
		}
		return c, certFile, keyFile
	}
	agentCert, _, _ := issue("node.loupe")
	_, relayClientCert, relayClientKey := issue("relay-client.loupe")
	_, relayServerCert, relayServerKey := issue("relay.loupe")
	cliCert, _, _ := issue("cli.loupe")

	// Agents that require a client certificate signed by the CA.
	agents := startAgents(t, 2, relaytest.Options{TLS: &tls.Config{
		Certificates: []tls.Certificate{agentCert}, ClientCAs: ca.Pool(),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13,
	}})
	fill(agents, 10)

	// A relay with the --tls-* files: mTLS to the agents and on its own listener.
	cfg := testConfig()
	if cfg.ClientTLS, err = relay.ClientTLSConfig(relayClientCert, relayClientKey, []string{caFile}); err != nil {
		t.Fatal(err)
	}
	if cfg.ServerTLS, err = relay.ServerTLSConfig(relayServerCert, relayServerKey, []string{caFile}); err != nil {
		t.Fatal(err)
	}
	r := startRelay(t, cfg, &tls.Config{Certificates: []tls.Certificate{cliCert}, RootCAs: ca.Pool()}, addrs(agents))
	waitConnected(t, r.srv, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, _ := readAll(t, ctx, r.client, &observerpb.GetFlowsRequest{Number: 100})
	if len(got) != 20 {
		t.Fatalf("over mTLS: got %d flows, want 20", len(got))
	}
	nodes, err := r.client.GetNodes(ctx, &observerpb.GetNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.GetNodes() {
		if !n.GetTls().GetEnabled() || n.GetState() != relaypb.NodeState_NODE_CONNECTED {
			t.Errorf("node %v: want connected over TLS", n)
		}
	}

	// A client without a certificate cannot use the relay.
	anon := startRelayClient(t, r.addr, &tls.Config{RootCAs: ca.Pool()})
	if _, err := anon.ServerStatus(ctx, &observerpb.ServerStatusRequest{}); err == nil {
		t.Error("relay served a client without a certificate")
	}

	// A relay without a client certificate is refused by the agents.
	cfg2 := testConfig()
	if cfg2.ClientTLS, err = relay.ClientTLSConfig("", "", []string{caFile}); err != nil {
		t.Fatal(err)
	}
	r2 := startRelay(t, cfg2, nil, addrs(agents))
	waitPeers(t, r2.srv, "both agents refuse the relay", func(p []relay.PeerInfo) bool {
		refused := 0
		for _, pi := range p {
			if !pi.Connecting && pi.State != relaypb.NodeState_NODE_CONNECTED && pi.Err != "" {
				refused++
			}
		}
		return refused == 2
	})
	peers, _ := r2.srv.Pool().Peers()
	for _, p := range peers {
		t.Logf("%s: %v: %s", p.Name, p.State, p.Err)
		if !strings.Contains(p.Err, "certificate") {
			t.Errorf("peer %s: error %q, want it to name the missing certificate", p.Name, p.Err)
		}
	}
	got, statuses := readAll(t, ctx, r2.client, &observerpb.GetFlowsRequest{Number: 100})
	if len(got) != 0 || len(statuses) == 0 || statuses[len(statuses)-1].GetStateChange() == relaypb.NodeState_NODE_CONNECTED {
		t.Errorf("relay without a client certificate got %d flows, statuses %v", len(got), statuses)
	}
}
