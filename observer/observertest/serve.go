// Package observertest serves an observer.Observer on loopback for the
// tests that talk to an agent: the observer's own, the relay's, the CLI's
// and the agent daemon's. It does not import the observer package, so the
// observer's in-package tests can use it too.
package observertest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Server is what Serve runs: *observer.Observer.
type Server interface {
	ServeListeners(ctx context.Context, tcp, unix net.Listener) error
}

// Serve serves o's gRPC API in plain text on a loopback port until the
// test ends and returns its address. An error from the server fails the
// test.
func Serve(t testing.TB, o Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.ServeListeners(ctx, l, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve the observer: %v", err)
		}
	})
	return l.Addr().String()
}

// Dial is a client connection to addr (from Serve), closed when the test
// ends.
func Dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}
