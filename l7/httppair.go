package l7

import "net/netip"

// Bounds of the HTTP pairer: connections tracked, and requests waiting on
// one connection (pipelining deeper than this is not paired).
const (
	DefaultMaxConns   = 65536
	maxPendingPerConn = 64
)

// ConnKey is one TCP connection: client and server address and port.
type ConnKey struct {
	Client, Server netip.AddrPort
}

// HTTPPairer pairs HTTP responses with requests per connection in order
// (HTTP/1.x keep-alive and pipelining answer in request order). Not safe
// for concurrent use.
type HTTPPairer[T any] struct {
	max   int
	conns map[ConnKey][]Pending[T]
}

// NewHTTPPairer holds at most maxConns connections (0: DefaultMaxConns).
func NewHTTPPairer[T any](maxConns int) *HTTPPairer[T] {
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	return &HTTPPairer[T]{max: maxConns, conns: map[ConnKey][]Pending[T]{}}
}

// Request queues a request; false when it cannot be held (too many
// connections, or too many requests waiting on this one).
func (p *HTTPPairer[T]) Request(k ConnKey, ts uint64, req T) bool {
	q, ok := p.conns[k]
	if !ok && len(p.conns) >= p.max {
		return false
	}
	if len(q) >= maxPendingPerConn {
		return false
	}
	p.conns[k] = append(q, Pending[T]{TimestampNS: ts, Request: req})
	return true
}

// Response takes the oldest request waiting on the connection.
func (p *HTTPPairer[T]) Response(k ConnKey) (Pending[T], bool) {
	q := p.conns[k]
	if len(q) == 0 {
		return Pending[T]{}, false
	}
	r := q[0]
	if len(q) == 1 {
		delete(p.conns, k)
	} else {
		p.conns[k] = q[1:]
	}
	return r, true
}

// Expire forgets requests older than before (CLOCK_BOOTTIME ns): their
// connection was cut or their answer lost. It returns how many.
func (p *HTTPPairer[T]) Expire(before uint64) int {
	n := 0
	for k, q := range p.conns {
		i := 0
		for i < len(q) && q[i].TimestampNS < before {
			i++
		}
		n += i
		if i == len(q) {
			delete(p.conns, k)
		} else if i > 0 {
			p.conns[k] = q[i:]
		}
	}
	return n
}

// Len is the number of connections with requests waiting.
func (p *HTTPPairer[T]) Len() int { return len(p.conns) }
