package main

import (
	"fmt"

	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/observer"
)

// observerFactory builds the flow observer the daemon feeds with datapath
// events, serving the Observer API with tlsCfg on TCP. It lives in the main
// package so that agent/daemon does not depend on the observer.
func observerFactory(tlsCfg observer.TLSConfig) func(daemon.ObserverParams) (daemon.Observer, error) {
	return func(p daemon.ObserverParams) (daemon.Observer, error) {
		return observer.New(observer.Config{
			NodeName:     p.NodeName,
			Metadata:     p.Metadata,
			BufferSize:   p.BufferSize,
			Log:          p.Log,
			Policy:       p.Policy,
			KernelEvents: p.KernelEvents,
			TLS:          tlsCfg,
		})
	}
}

// checkTLS loads the --tls-* files once at start, so that a wrong path or
// a mismatched pair stops the agent before it touches the node.
func checkTLS(c observer.TLSConfig) error {
	if c == (observer.TLSConfig{}) {
		return nil
	}
	if _, err := c.ServerConfig(); err != nil {
		return fmt.Errorf("--tls-cert-file, --tls-key-file, --tls-client-ca-file: %w", err)
	}
	return nil
}
