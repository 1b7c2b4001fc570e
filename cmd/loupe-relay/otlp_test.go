package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/loupe-project/loupe/otlp/otlptest"
	"github.com/loupe-project/loupe/relay/relaytest"
)

// The relay exports every peer's flows from start-up with no client
// connected: two agents, loupe-relay as its command runs, and a real OTLP
// receiver; nothing reads the relay's Observer API.
func TestRelayExportsWithoutClients(t *testing.T) {
	r := otlptest.Start(t, "127.0.0.1:0", nil)
	var agents []*relaytest.Agent
	for _, name := range []string{"node-a", "node-b"} {
		a, err := relaytest.Start(relaytest.Options{Name: name, Watermarks: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.Stop)
		agents = append(agents, a)
	}
	cmd := newCommand()
	cmd.SetArgs([]string{"--peer", agents[0].Addr(), "--peer", agents[1].Addr(), "--insecure-listen", "127.0.0.1:0", "--lab",
		"--otlp-endpoint", r.Addr(), "--otlp-insecure", "--otlp-batch-timeout", "100ms", "--otlp-metrics-interval", "200ms"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})

	seen := func() map[string]map[string]string {
		out := map[string]map[string]string{}
		for _, lr := range r.LogRecords() {
			a := otlptest.Attrs(lr)
			out[a["k8s.node.name"]] = a
		}
		return out
	}
	i := 0
	otlptest.WaitFor(t, 30*time.Second, "flows of both agents at the collector", func() bool {
		for _, a := range agents {
			a.Add(relaytest.Flow(a.Name(), time.Now(), i))
		}
		i++
		time.Sleep(50 * time.Millisecond)
		s := seen()
		return s["node-a"] != nil && s["node-b"] != nil
	})
	a := seen()["node-a"]
	for k, want := range map[string]string{"network.transport": "tcp", "destination.port": "8080", "k8s.src.namespace": "demo",
		"k8s.src.owner.name": "client", "k8s.dst.owner.name": "server", "loupe.verdict": "FORWARDED", "loupe.flow.count": "1"} {
		if a[k] != want {
			t.Errorf("%s = %q, want %q", k, a[k], want)
		}
	}
	if !strings.HasPrefix(a["source.address"], "10.244.") {
		t.Errorf("source.address %q", a["source.address"])
	}
	if got := r.Resources()[0].Attributes().AsRaw()["service.name"]; got != "loupe-relay" {
		t.Errorf("service.name %v", got)
	}
	otlptest.WaitFor(t, 10*time.Second, "the relay's metrics", func() bool { return len(r.Metrics()) > 0 })
}
