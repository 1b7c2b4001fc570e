package ui

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// get sends GET path to the UI at addr with the given Host and Origin.
func get(t *testing.T, addr, host, origin, path string) int {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func ws(addr, host, origin string) (*websocket.Conn, int, error) {
	h := http.Header{"Host": {host}}
	if origin != "" {
		h.Set("Origin", origin)
	}
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+addr+"/ws", h)
	code := 0
	if resp != nil {
		code = resp.StatusCode
	}
	return c, code, err
}

// A DNS-rebinding page reaches the UI under the attacker's name, with its
// own name as Origin. Every route refuses that Host with 421 and the
// websocket refuses a foreign Origin, while the UI's own address (an IP
// literal, localhost, or a configured name) still works.
func TestRebindingHostAndForeignOriginRefused(t *testing.T) {
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	_, addr := startUIConfig(t, Config{Flows: RelayFlows(startRelay(t, a)), AllowedHosts: []string{"loupe.example.com"}})
	_, port, _ := net.SplitHostPort(addr)
	rebind := "rebind.attacker.example:" + port

	for _, path := range []string{"/", "/index.html", "/api/map", "/no-such-file"} {
		if code := get(t, addr, rebind, "http://"+rebind, path); code != http.StatusMisdirectedRequest {
			t.Errorf("GET %s with Host %s: %d, want 421", path, rebind, code)
		}
	}
	if _, code, err := ws(addr, rebind, "http://"+rebind); err == nil || code != http.StatusMisdirectedRequest {
		t.Errorf("websocket with Host %s: %d, %v; want 421", rebind, code, err)
	}
	for _, own := range []string{addr, "localhost:" + port, "[::1]:" + port, "loupe.example.com:" + port, "LOUPE.example.com.:" + port} {
		for _, path := range []string{"/", "/api/map"} {
			if code := get(t, addr, own, "", path); code != http.StatusOK {
				t.Errorf("GET %s with Host %s: %d, want 200", path, own, code)
			}
		}
	}
	// The websocket: own origin works, a foreign one (another site, or the
	// UI's own host on another port) is refused though the Host is right.
	c, _, err := ws(addr, addr, "http://"+addr)
	if err != nil {
		t.Fatalf("own origin refused: %v", err)
	}
	c.Close()
	for _, origin := range []string{"http://" + rebind, "http://evil.example.com", "http://127.0.0.1:1", "null"} {
		if _, code, err := ws(addr, addr, origin); err == nil || code != http.StatusForbidden {
			t.Errorf("websocket with Origin %s: %d, %v; want 403", origin, code, err)
		}
	}
}

// A browser that stops answering pings (here: a client that never reads,
// so never answers) is dropped after the read deadline instead of holding
// its connection forever.
func TestWebsocketSilentPeerDropped(t *testing.T) {
	defer func(i, w time.Duration) { pingInterval, pongWait = i, w }(pingInterval, pongWait)
	pingInterval, pongWait = 50*time.Millisecond, 300*time.Millisecond
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	s, addr := startUI(t, startRelay(t, a))
	c, _, err := ws(addr, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	clients := func() int {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.clients)
	}
	for end := time.Now().Add(10 * time.Second); clients() != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("a client that answers no ping is still connected (%d clients)", clients())
		}
	}
}

// Host and Origin headers are outside bytes: whatever they hold, the checks
// do not panic, and a name they let through is an IP literal, localhost or
// a configured name.
func FuzzHostAndOrigin(f *testing.F) {
	for _, s := range []string{"127.0.0.1:12000", "[::1]:80", "localhost", "a.localhost:1", "rebind.attacker.example:12000",
		"loupe.example.com.", "", ":", "[", "http://x", "%00", "1.2.3.4.nip.io"} {
		f.Add(s, "http://"+s)
	}
	s, err := New(Config{Flows: RelayFlows(nil), AllowedHosts: []string{"loupe.example.com"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, host, origin string) {
		if s.hostAllowed(host) {
			h := host
			if hh, _, err := net.SplitHostPort(h); err == nil {
				h = hh
			}
			h = strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
			_, ipErr := netip.ParseAddr(h)
			if ipErr != nil && h != "localhost" && !strings.HasSuffix(h, ".localhost") && h != "loupe.example.com" {
				t.Fatalf("host %q allowed as %q", host, h)
			}
		}
		r := httptest.NewRequest("GET", "http://127.0.0.1/ws", nil)
		r.Host = host
		r.Header.Set("Origin", origin)
		if origin != "" && s.checkOrigin(r) && !s.hostAllowed(host) {
			t.Fatalf("origin %q allowed for a refused host %q", origin, host)
		}
	})
}

// A keep-alive HTTP connection that carries no further request is closed
// by the server after its IdleTimeout.
func TestIdleHTTPConnectionClosed(t *testing.T) {
	defer func(d time.Duration) { idleTimeout = d }(idleTimeout)
	idleTimeout = 200 * time.Millisecond
	a, err := relaytest.Start(relaytest.Options{Name: "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	_, addr := startUI(t, startRelay(t, a))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "GET /api/map HTTP/1.1\r\nHost: "+addr+"\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Read the answer, then wait for the server to close (EOF); the
	// deadline only bounds a broken test.
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("the idle connection was not closed by the server: %v", err)
	}
	if !strings.HasPrefix(string(b), "HTTP/1.1 200") {
		t.Fatalf("answer %q", b)
	}
}
