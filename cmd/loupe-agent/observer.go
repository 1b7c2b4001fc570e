package main

import (
	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/observer"
)

// newObserver builds the flow observer the daemon feeds with datapath
// events (the contract in .team/CONTRACTS.md, "Agent wiring").
func newObserver(p daemon.ObserverParams) (daemon.Observer, error) {
	return observer.New(observer.Config{
		NodeName:   p.NodeName,
		Metadata:   p.Metadata,
		BufferSize: p.BufferSize,
		Log:        p.Log,
		Policy:     p.Policy,
	})
}
