package cni

import (
	"testing"

	endpointv1 "github.com/loupe-project/loupe/api/endpoint/v1"
)

// The agent round trips of one ADD, against an in-memory agent over a real
// unix socket: what the plugin's gRPC costs apart from the agent's work
// (issue #25's budget). FirstCall is a fresh process's connection set-up
// plus Allocate; NextCall one more call on it, as Register is.
func BenchmarkAgentFirstCall(b *testing.B) {
	sock := serveFake(b, &fakeAgent{})
	for b.Loop() {
		ag, err := newSession(sock)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := ag.api.Allocate(ag.ctx, &endpointv1.AllocateRequest{ContainerId: "c1", Ifname: "eth0"}); err != nil {
			b.Fatal(err)
		}
		ag.Close()
	}
}

func BenchmarkAgentNextCall(b *testing.B) {
	sock := serveFake(b, &fakeAgent{})
	ag, err := newSession(sock)
	if err != nil {
		b.Fatal(err)
	}
	defer ag.Close()
	for b.Loop() {
		if _, err := ag.api.Allocate(ag.ctx, &endpointv1.AllocateRequest{ContainerId: "c1", Ifname: "eth0"}); err != nil {
			b.Fatal(err)
		}
	}
}
