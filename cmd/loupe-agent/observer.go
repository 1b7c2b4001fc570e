package main

import (
	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/observer"
)

// newObserver builds the flow observer the daemon feeds with datapath
// events. It lives in the main package so that agent/daemon does not
// depend on the observer.
func newObserver(p daemon.ObserverParams) (daemon.Observer, error) {
	return observer.New(observer.Config{
		NodeName:   p.NodeName,
		Metadata:   p.Metadata,
		BufferSize: p.BufferSize,
		Log:        p.Log,
		Policy:     p.Policy,
	})
}
