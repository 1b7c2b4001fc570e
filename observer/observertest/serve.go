// Package observertest serves an observer.Observer on loopback for the
// tests of the packages that talk to an agent: the relay, the CLI and the
// agent's daemon. (The observer package's own tests cannot import it.)
package observertest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/observer"
)

// Serve serves o's gRPC API in plain text on a loopback port until the
// test ends and returns its address. An error from the server fails the
// test.
func Serve(t testing.TB, o *observer.Observer) string {
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
