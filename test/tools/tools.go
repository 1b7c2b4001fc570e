//go:build tools

// Package tools pins the stock Hubble binaries that loupe's compatibility
// tests run against. It is never compiled: the blank imports only make
// `go mod tidy` record the exact dependency set of those main packages, and
// build.sh builds them with `go build`.
package tools

import (
	_ "github.com/cilium/cilium/hubble"
	_ "github.com/cilium/cilium/hubble-relay"
)
