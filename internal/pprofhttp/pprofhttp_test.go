package pprofhttp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
)

// --pprof-listen serves Go's profiler index and profiles, and stops with
// its context.
func TestListenServesProfiles(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	serve, err := Listen(ctx, addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serve() }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/profile?seconds=1"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || len(b) == 0 {
			t.Fatalf("%s: %s, %d bytes", path, resp.Status, len(b))
		}
		if path == "/debug/pprof/" && !strings.Contains(string(b), "goroutine") {
			t.Fatalf("%s: no profile index: %.200s", path, b)
		}
	}
}
