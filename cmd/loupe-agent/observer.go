package main

import (
	"errors"
	"fmt"

	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/history"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
)

// observerFactory builds the flow observer the daemon feeds with datapath
// events, serving the Observer API with tlsCfg on TCP. It lives in the main
// package so that agent/daemon does not depend on the observer.
// hist (nil: off) opens the on-disk flow history in stateDir.
func observerFactory(tlsCfg observer.TLSConfig, metrics []hubblemetrics.Spec, hist *historyFlags, stateDir *string) func(daemon.ObserverParams) (daemon.Observer, error) {
	return func(p daemon.ObserverParams) (daemon.Observer, error) {
		var store *history.Store
		if hist != nil {
			var err error
			if store, err = hist.open(*stateDir, p.Log); err != nil {
				return nil, err
			}
		}
		var caughtUp func() int64
		if p.Datapath != nil {
			caughtUp = p.Datapath.EventsCaughtUp
			if p.L7On {
				// Watermarks promise no older flow: from either ring.
				dp := p.Datapath
				caughtUp = func() int64 { return min(dp.EventsCaughtUp(), dp.L7CaughtUp()) }
			}
		}
		return observer.New(observer.Config{
			NodeName:   p.NodeName,
			Metadata:   p.Metadata,
			BufferSize: p.BufferSize,
			Log:        p.Log,
			Policy:     p.Policy,
			TLS:        tlsCfg,
			// Watermarks to followers say how far the events have got.
			EventsCaughtUp: caughtUp,
			Metrics:        metrics,
			KernelEvents:   p.KernelEvents,
			ServiceByID:    p.ServiceByID,
			L7:             p.L7,
			History:        store,
			Services:       p.Services,
		})
	}
}

// observerListen checks the Observer API's TCP flags and returns the
// address to serve on. TCP is served with mTLS (--listen and all three
// --tls-* flags) or, asked for by name, in plain text (--insecure-listen);
// with neither, only the unix socket serves. The files are loaded once here,
// so that a wrong path or a mismatched pair stops the agent before it
// touches the node.
func observerListen(listen, insecure string, c observer.TLSConfig) (string, error) {
	anyTLS := c != (observer.TLSConfig{})
	switch {
	case listen != "" && insecure != "":
		return "", errors.New("--listen (mTLS) and --insecure-listen (plain text) exclude each other")
	case insecure != "" && anyTLS:
		return "", errors.New("--insecure-listen serves plain text: the --tls-* flags go with --listen")
	case insecure != "":
		return insecure, nil
	case listen == "" && anyTLS:
		return "", errors.New("the --tls-* flags secure the Observer API's TCP listener: give it with --listen ADDR")
	case listen == "":
		return "", nil
	case c.CertFile == "" || c.KeyFile == "" || c.ClientCAFile == "":
		return "", fmt.Errorf("--listen %s serves the Observer API over TCP with mTLS and needs --tls-cert-file, --tls-key-file and --tls-client-ca-file (loupe certs issues them); for plain text on a private network, use --insecure-listen %s instead", listen, listen)
	}
	if _, err := c.ServerConfig(); err != nil {
		return "", fmt.Errorf("--tls-cert-file, --tls-key-file, --tls-client-ca-file: %w", err)
	}
	return listen, nil
}

// parseMetrics reads --metrics once at start, so a typo stops the agent
// with the family or option it could not read.
func parseMetrics(s string) ([]hubblemetrics.Spec, error) {
	specs, err := hubblemetrics.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	return specs, nil
}
