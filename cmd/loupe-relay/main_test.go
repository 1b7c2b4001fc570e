package main

import (
	"log/slog"
	"testing"

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
