package l7

import (
	"net/netip"
	"time"
)

// DefaultDNSTimeout is how long a query waits for its answer before it
// becomes a timeout flow.
const DefaultDNSTimeout = 5 * time.Second

// DefaultMaxPending bounds the queries waiting for an answer; a query that
// finds the table full is counted and not paired.
const DefaultMaxPending = 65536

// DNSKey identifies one exchange: the client's address and port, the
// server's address and the message id.
type DNSKey struct {
	Client netip.AddrPort
	Server netip.Addr
	ID     uint16
}

// Pending is a query waiting for its answer.
type Pending[T any] struct {
	TimestampNS uint64 // the query's kernel timestamp (CLOCK_BOOTTIME)
	Request     T      // what the response flow carries of the request
}

// DNSPairer pairs DNS answers with their queries, bounded in size and age.
// Not safe for concurrent use.
type DNSPairer[T any] struct {
	timeout uint64
	max     int
	pending map[DNSKey]Pending[T]
	// order is the keys in arrival order, for expiry: timestamps only
	// grow, so the oldest are at the front. Keys already answered are
	// skipped when they reach the front.
	order []DNSKey
}

// NewDNSPairer returns a pairer whose queries time out after timeout (0:
// DefaultDNSTimeout) and that holds at most maxPending (0: DefaultMaxPending).
func NewDNSPairer[T any](timeout time.Duration, maxPending int) *DNSPairer[T] {
	if timeout <= 0 {
		timeout = DefaultDNSTimeout
	}
	if maxPending <= 0 {
		maxPending = DefaultMaxPending
	}
	return &DNSPairer[T]{timeout: uint64(timeout), max: maxPending, pending: make(map[DNSKey]Pending[T])}
}

// Query records a query. It returns false when the table is full (the
// query's answer will not be paired) or the same exchange is pending
// already (a retransmission: the first one stands).
func (p *DNSPairer[T]) Query(k DNSKey, ts uint64, req T) bool {
	if _, dup := p.pending[k]; dup || len(p.pending) >= p.max {
		return false
	}
	p.pending[k] = Pending[T]{TimestampNS: ts, Request: req}
	p.order = append(p.order, k)
	return true
}

// Answer takes the query an answer belongs to.
func (p *DNSPairer[T]) Answer(k DNSKey) (Pending[T], bool) {
	q, ok := p.pending[k]
	if ok {
		delete(p.pending, k)
	}
	return q, ok
}

// Len is the number of queries waiting.
func (p *DNSPairer[T]) Len() int { return len(p.pending) }

// Expire removes the queries older than the timeout at now (CLOCK_BOOTTIME
// ns) and calls fn for each, oldest first.
func (p *DNSPairer[T]) Expire(now uint64, fn func(DNSKey, Pending[T])) {
	i := 0
	for ; i < len(p.order); i++ {
		k := p.order[i]
		q, ok := p.pending[k]
		if !ok {
			continue // answered
		}
		if now < q.TimestampNS+p.timeout {
			break
		}
		delete(p.pending, k)
		fn(k, q)
	}
	p.order = p.order[i:]
	// Answered keys pile up behind a long-waiting one; compact when the
	// slice is mostly dead so memory stays bounded by max.
	if len(p.order) > 2*p.max+1024 {
		live := p.order[:0]
		for _, k := range p.order {
			if _, ok := p.pending[k]; ok {
				live = append(live, k)
			}
		}
		p.order = live
	}
}
