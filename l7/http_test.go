package l7

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
)

func TestParseHTTP(t *testing.T) {
	m, err := ParseHTTP([]byte("GET /status/500?token=secret HTTP/1.1\r\nHost: api:8080\r\nCookie: s=1\r\nUser-Agent: t\r\nAuthorization: Bearer x\r\n\r\n"), false)
	if err != nil || m.Response || m.Method != "GET" || m.Path != "/status/500" || m.Protocol != "HTTP/1.1" ||
		len(m.Headers) != 2 || m.Header("Host") != "api:8080" || m.Header("User-Agent") != "t" || m.Header("Cookie") != "" {
		t.Fatalf("request: %+v %v", m, err)
	}
	if m, _ = ParseHTTP([]byte("GET /a?b=c HTTP/1.0\r\n"), true); m.Path != "/a?b=c" {
		t.Fatalf("kept query: %+v", m)
	}
	m, err = ParseHTTP([]byte("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nSet-Cookie: x\r\nContent-Le"), false)
	if err != nil || !m.Response || m.Code != 404 || m.Header("Content-Type") != "text/plain" || len(m.Headers) != 1 {
		t.Fatalf("response: %+v %v", m, err)
	}
	for _, bad := range []string{
		"", "GET / HTTP/1.1", "GET  HTTP/1.1\r\n", "FETCH / HTTP/1.1\r\n", "GET / HTTP/2.0\r\n", "GET /\x01 HTTP/1.1\r\n",
		"HTTP/1.1 99 x\r\n", "HTTP/1.1 600 x\r\n", "HTTP/1.2 200 OK\r\n", "HTTP/1.1 2x0 OK\r\n", "GET / HTTP/1.1\r\nno colon\r\n\r\n",
	} {
		if _, err := ParseHTTP([]byte(bad), false); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func TestHTTPPairerFIFO(t *testing.T) {
	p := NewHTTPPairer[string](1)
	k := ConnKey{netip.MustParseAddrPort("10.0.0.1:4000"), netip.MustParseAddrPort("10.0.0.2:80")}
	for i, r := range []string{"a", "b", "c"} {
		if !p.Request(k, uint64(i), r) {
			t.Fatal("refused")
		}
	}
	if p.Request(ConnKey{Client: netip.MustParseAddrPort("10.0.0.3:1")}, 0, "x") {
		t.Fatal("second connection past the bound")
	}
	for _, want := range []string{"a", "b"} {
		if r, ok := p.Response(k); !ok || r.Request != want {
			t.Fatalf("got %v %v, want %s", r, ok, want)
		}
	}
	if n := p.Expire(10); n != 1 || p.Len() != 0 {
		t.Fatalf("expired %d, %d left", n, p.Len())
	}
	if _, ok := p.Response(k); ok {
		t.Fatal("response paired with nothing")
	}
	for i := range maxPendingPerConn + 1 {
		if ok := p.Request(k, 1, "r"); ok != (i < maxPendingPerConn) {
			t.Fatalf("request %d: %v", i, ok)
		}
	}
}

// Pipelined messages in one captured payload: each is read, as far as the
// framing is known.
func TestParseHTTPMessages(t *testing.T) {
	for _, c := range []struct {
		name, in string
		want     []string // method+path, or the status code
	}{
		{"two requests", "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", []string{"GET /a", "GET /b"}},
		{"a request with a body", "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n", []string{"POST /a", "GET /b"}},
		{"responses with lengths", "HTTP/1.1 500 E\r\nContent-Length: 2\r\n\r\nnoHTTP/1.1 204 N\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", []string{"500", "204", "200"}},
		{"the second head cut by the capture", "GET /a HTTP/1.1\r\n\r\nGET /b HT", []string{"GET /a"}},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", []string{"200"}},
		{"a response without a length", "HTTP/1.0 200 OK\r\n\r\nHTTP/1.0 200 OK\r\n\r\n", []string{"200"}},
		{"a body past the capture", "HTTP/1.1 200 OK\r\nContent-Length: 900\r\n\r\nxx", []string{"200"}},
		{"garbage after the first", "GET /a HTTP/1.1\r\n\r\nnot http", []string{"GET /a"}},
	} {
		ms, err := ParseHTTPMessages([]byte(c.in), false)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		var got []string
		for _, m := range ms {
			if m.Response {
				got = append(got, strconv.Itoa(int(m.Code)))
			} else {
				got = append(got, m.Method+" "+m.Path)
			}
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
	if _, err := ParseHTTPMessages([]byte("nonsense\r\n"), false); err == nil {
		t.Error("accepted nonsense")
	}
	many := strings.Repeat("GET / HTTP/1.1\r\n\r\n", 20)
	if ms, _ := ParseHTTPMessages([]byte(many), false); len(ms) != maxPipelined {
		t.Errorf("%d messages from 20 pipelined, want the bound %d", len(ms), maxPipelined)
	}
}

func FuzzParseHTTPMessages(f *testing.F) {
	f.Add([]byte("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 404 N\r\nContent-Length: 0\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, keep bool) {
		ms, err := ParseHTTPMessages(b, keep)
		first, ferr := ParseHTTP(b, keep)
		if (err == nil) != (ferr == nil) {
			t.Fatalf("first message error %v, all messages %v", ferr, err)
		}
		if err != nil {
			return
		}
		if len(ms) == 0 || len(ms) > maxPipelined || ms[0].Method != first.Method || ms[0].Path != first.Path || ms[0].Code != first.Code {
			t.Fatalf("%d messages, first %+v vs %+v", len(ms), ms[0], first)
		}
		for _, m := range ms {
			if m.Protocol != "HTTP/1.0" && m.Protocol != "HTTP/1.1" || len(m.Headers) > len(HTTPHeaderAllowlist) {
				t.Fatalf("accepted %+v", m)
			}
		}
	})
}

func FuzzParseHTTP(f *testing.F) {
	f.Add([]byte("GET /status/500?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"), false)
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Type: x\r\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, keep bool) {
		m, err := ParseHTTP(b, keep)
		if err != nil {
			return
		}
		if m.Protocol != "HTTP/1.0" && m.Protocol != "HTTP/1.1" || len(m.Headers) > len(HTTPHeaderAllowlist) {
			t.Fatalf("accepted %+v", m)
		}
		if m.Response != (m.Code != 0) || (!keep && !m.Response && len(m.Path) > 0 && containsQuery(m.Path)) {
			t.Fatalf("accepted %+v", m)
		}
	})
}

func containsQuery(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '?' {
			return true
		}
	}
	return false
}
