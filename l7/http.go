package l7

import (
	"bytes"
	"fmt"
	"net/textproto"
	"strconv"
	"strings"
)

// HTTPHeaderAllowlist are the only headers whose values an HTTP flow
// keeps (privacy by default): Host names the service, Content-Type and
// User-Agent tell what kind of exchange it is. Cookies, authorization and
// everything else never leave the parser.
var HTTPHeaderAllowlist = []string{"Host", "Content-Type", "User-Agent"}

// HTTP is the part of an HTTP/1.x message head a flow shows.
type HTTP struct {
	Response bool
	Method   string // requests
	Path     string // requests: the request target, query dropped unless kept
	Protocol string // "HTTP/1.0" or "HTTP/1.1"
	Code     uint16 // responses
	Headers  [][2]string
}

var httpMethods = map[string]bool{
	"GET": true, "POST": true, "PUT": true, "HEAD": true, "DELETE": true,
	"PATCH": true, "OPTIONS": true, "CONNECT": true, "TRACE": true,
}

// ParseHTTP parses the head of an HTTP/1.0 or 1.1 message from the first
// bytes of a TCP payload: a request line or a status line, strictly, then
// the allowlisted headers among the complete header lines captured.
// keepQuery keeps a request target's query string.
func ParseHTTP(b []byte, keepQuery bool) (HTTP, error) {
	m, _, err := parseHTTP(b, keepQuery)
	return m, err
}

// maxPipelined bounds the messages read from one captured payload.
const maxPipelined = 8

// ParseHTTPMessages parses every HTTP/1.x message head that begins within
// the captured bytes, for pipelined requests (and their responses) sent in
// one segment: after a complete head, the next message starts past the
// body its Content-Length gives (none for a request without one, or for a
// 1xx, 204 or 304 response). It stops where that is unknown (chunked, a
// response without a length, a head the capture cut) or where the next
// bytes do not parse; the first message's error is the error.
func ParseHTTPMessages(b []byte, keepQuery bool) ([]HTTP, error) {
	var out []HTTP
	for len(out) < maxPipelined {
		m, next, err := parseHTTP(b, keepQuery)
		if err != nil {
			if len(out) == 0 {
				return nil, err
			}
			break
		}
		out = append(out, m)
		if next < 0 || next >= len(b) {
			break
		}
		b = b[next:]
	}
	return out, nil
}

// parseHTTP is ParseHTTP that also returns where the next message starts
// in b, or -1 when that is unknown.
func parseHTTP(b []byte, keepQuery bool) (HTTP, int, error) {
	var m HTTP
	eol := bytes.Index(b, []byte("\r\n"))
	if eol < 0 {
		return m, -1, fmt.Errorf("http: %w: no complete first line", ErrMalformed)
	}
	line, rest := string(b[:eol]), b[eol+2:]
	first, second, ok1 := strings.Cut(line, " ")
	second, third, ok2 := strings.Cut(second, " ")
	if !ok1 || !ok2 {
		return m, -1, fmt.Errorf("http: %w: first line %q", ErrMalformed, truncate(line))
	}
	if strings.HasPrefix(first, "HTTP/1.") {
		if !validProto(first) || len(second) != 3 || second[0] < '1' || second[0] > '5' ||
			second[1] < '0' || second[1] > '9' || second[2] < '0' || second[2] > '9' || !printable(third) {
			return m, -1, fmt.Errorf("http: %w: status line %q", ErrMalformed, truncate(line))
		}
		m.Response, m.Protocol = true, first
		m.Code = uint16(second[0]-'0')*100 + uint16(second[1]-'0')*10 + uint16(second[2]-'0')
	} else {
		if !httpMethods[first] || !validProto(third) || second == "" || strings.ContainsAny(second, " \t") || !printable(second) {
			return m, -1, fmt.Errorf("http: %w: request line %q", ErrMalformed, truncate(line))
		}
		m.Method, m.Protocol, m.Path = first, third, second
		if !keepQuery {
			m.Path, _, _ = strings.Cut(m.Path, "?")
		}
	}
	// Complete header lines only: the capture may end inside one.
	next, bodyLen, framed := -1, 0, true
	for len(rest) > 0 {
		eol := bytes.Index(rest, []byte("\r\n"))
		if eol == 0 { // the blank line: the head ends here
			next = len(b) - len(rest) + 2
			break
		}
		if eol < 0 {
			break // a line the capture cut
		}
		k, v, ok := strings.Cut(string(rest[:eol]), ":")
		rest = rest[eol+2:]
		if !ok {
			return m, -1, fmt.Errorf("http: %w: header line without a colon", ErrMalformed)
		}
		k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
		// Framing only: read to find the next message, never kept.
		switch k {
		case "Content-Length":
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 0 {
				framed = false
			}
			bodyLen = n
		case "Transfer-Encoding":
			framed = false
		}
		for _, a := range HTTPHeaderAllowlist {
			if k == a && len(m.Headers) < len(HTTPHeaderAllowlist) {
				m.Headers = append(m.Headers, [2]string{k, strings.TrimSpace(v)})
			}
		}
	}
	if next < 0 || !framed {
		return m, -1, nil
	}
	if m.Response && bodyLen == 0 && !hasNoBody(m.Code) && !hasLength(b[:next]) {
		return m, -1, nil // the body runs to the end of the connection
	}
	return m, next + bodyLen, nil
}

// hasNoBody: responses that never have a body.
func hasNoBody(code uint16) bool { return code < 200 || code == 204 || code == 304 }

// hasLength reports whether a head declares a Content-Length.
func hasLength(head []byte) bool {
	return bytes.Contains(bytes.ToLower(head), []byte("\r\ncontent-length:"))
}

// Header returns the value of an allowlisted header, or "".
func (m *HTTP) Header(k string) string {
	for _, h := range m.Headers {
		if h[0] == k {
			return h[1]
		}
	}
	return ""
}

func validProto(p string) bool { return p == "HTTP/1.0" || p == "HTTP/1.1" }

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
