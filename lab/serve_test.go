package lab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

func TestPortNamesCarryHTTP(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Ports: []corev1.ContainerPort{
		{ContainerPort: 9000, Name: "http-api"},
		{ContainerPort: 9001, Name: "grpc"},
		{ContainerPort: 9002, Name: "Bad/Name"},
		{ContainerPort: 9003, Protocol: corev1.ProtocolUDP, Name: "http-udp"},
	}}}}}
	got := strings.Join(podPorts(pod), ",")
	if got != "9000/TCP/http-api,9001/TCP/grpc,9002/TCP,9003/UDP/http-udp" {
		t.Fatalf("podPorts = %s", got)
	}
	ps, err := parsePorts(got)
	if err != nil || len(ps) != 4 {
		t.Fatalf("parsePorts(%s) = %v, %v", got, ps, err)
	}
	for i, want := range []bool{true, false, false, false} {
		if isHTTPPort(ps[i]) != want {
			t.Errorf("isHTTPPort(%v) = %v, want %v", ps[i], !want, want)
		}
	}
	for _, p := range []portSpec{{80, "TCP", ""}, {8080, "TCP", "web"}, {1234, "TCP", "http"}} {
		if !isHTTPPort(p) {
			t.Errorf("isHTTPPort(%v) = false", p)
		}
	}
	for _, bad := range []string{"80/TCP/", "80/TCP/HTTP", "80/TCP/a,b", "80/TCP/-x", "80/TCP/http-far-too-long-name"} {
		if _, err := parsePorts(bad); err == nil {
			t.Errorf("parsePorts(%q) accepted", bad)
		}
	}
}

// freePort is a TCP port nothing listens on right now.
func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startServe runs serve for ports until the test ends.
func startServe(t *testing.T, ports []portSpec) {
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, "x/a", ports, dnsServer{}, slog.New(slog.NewTextHandler(io.Discard, nil)), func() { close(ready) })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
}

// A port named http* serves HTTP whatever its number; the same number
// unnamed echoes.
func TestServeHTTPOnNamedPort(t *testing.T) {
	named, plain := freePort(t), freePort(t)
	startServe(t, []portSpec{{named, "TCP", "http-api"}, {plain, "TCP", "api"}})
	ask := func(port int) string {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 2*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprint(c, "GET /status/503 HTTP/1.0\r\nHost: a\r\n\r\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		return line
	}
	if got := ask(named); !strings.HasPrefix(got, "HTTP/1.0 503") {
		t.Errorf("port named http-api answered %q, want an HTTP 503", got)
	}
	if got := ask(plain); got != "GET /status/503 HTTP/1.0\r\n" {
		t.Errorf("port named api answered %q, want the echo", got)
	}
}

// probe speaks HTTP to a port named http* and raw bytes otherwise, as the
// server chooses (root: it enters a netns, here its own).
func TestPrivilegedProbeFollowsPortName(t *testing.T) {
	named := freePort(t)
	startServe(t, []portSpec{{named, "TCP", "http-api"}})
	// This thread's netns, not /proc/self's: the process's first thread
	// may be locked inside a pod netns by another test's goroutine.
	self := "/proc/thread-self/ns/net"
	ctx := context.Background()
	if !probe(ctx, self, "127.0.0.1", portSpec{named, "TCP", "http-api"}, 2*time.Second) {
		t.Error("HTTP probe of the port named http-api failed")
	}
	if probe(ctx, self, "127.0.0.1", portSpec{named, "TCP", ""}, 2*time.Second) {
		t.Error("an echo probe of an HTTP port succeeded: the probe cannot tell what it spoke")
	}
	rec := podRecord{Ports: []string{fmt.Sprintf("%d/TCP/http-api", named)}}
	if p := declaredPort(rec, named, "TCP"); p.Name != "http-api" {
		t.Errorf("declaredPort = %v", p)
	}
}
