package observer

import (
	"slices"
	"sync"
	"sync/atomic"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/observer/flowwire"
)

// A flow's wire form is written once, by whichever of the history writer
// and the followers reaches its entry first, and shared through the entry
// (entry.wire): before, each wrote its own, and the second encoding was
// 8–10 % of the agent's CPU under the events bench. The history writer
// releases an entry's bytes (wireTaken) once it and every GetFlows reader
// of the ring have passed it (readerSet): the ring keeps bytes only between
// the slowest of them and the head. A fixed window behind the writer does
// not do: the relay's follower runs tens of thousands of flows behind it
// under load, and then wrote every flow again.

// readerSet is where the ring's GetFlows readers are: each holds the
// sequence number it reads next.
type readerSet struct {
	mu  sync.Mutex
	cur []*atomic.Uint64
}

// add registers a reader starting at seq; it updates the returned cursor
// as it reads and passes it to remove when done.
func (s *readerSet) add(seq uint64) *atomic.Uint64 {
	c := new(atomic.Uint64)
	c.Store(seq)
	s.mu.Lock()
	s.cur = append(s.cur, c)
	s.mu.Unlock()
	return c
}

func (s *readerSet) remove(c *atomic.Uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.cur, c); i >= 0 {
		s.cur = slices.Delete(s.cur, i, i+1)
	}
}

// below returns limit or the slowest reader's position, if lower.
func (s *readerSet) below(limit uint64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.cur {
		limit = min(limit, c.Load())
	}
	return limit
}

// wireArena holds the wire forms a goroutine shares through entries: one
// allocation per chunk instead of two per flow (the bytes and the slice
// header entry.wire points to). Its memory is never reused: a chunk lives
// while an entry points into it, and the ring overwrites entries in
// order, so chunks die in order. Not safe for concurrent use.
type wireArena struct {
	buf  []byte
	hdrs [][]byte
}

const (
	wireChunk   = 128 << 10 // bytes per chunk
	wireReserve = 4 << 10   // a chunk with less room left is not used for another flow
	wireHeaders = 256       // slice headers per allocation
)

// encode writes f's wire form into the arena and returns a pointer for
// entry.wire.
func (a *wireArena) encode(enc *flowwire.Encoder, f *flowpb.Flow) (*[]byte, error) {
	if cap(a.buf)-len(a.buf) < wireReserve {
		a.buf = make([]byte, 0, wireChunk)
	}
	tail := a.buf[len(a.buf):]
	w, err := enc.Append(tail, f)
	if err != nil {
		return nil, err
	}
	if len(w) <= cap(tail) { // written in place; a larger flow got its own array
		a.buf = a.buf[:len(a.buf)+len(w)]
	}
	if len(a.hdrs) == cap(a.hdrs) {
		a.hdrs = make([][]byte, 0, wireHeaders)
	}
	a.hdrs = append(a.hdrs, w[:len(w):len(w)])
	return &a.hdrs[len(a.hdrs)-1], nil
}

// sharedWire returns e's flow's wire form, written into arena by enc and
// left in the entry for the others unless one of them was first. Nil
// without a history (a follower then writes straight into its response)
// or once the history writer has released e (see wireTaken), or when the
// flow cannot be written.
func (o *Observer) sharedWire(e *entry, enc *flowwire.Encoder, arena *wireArena) []byte {
	if o.hist == nil {
		return nil
	}
	return shareWire(e, enc, arena)
}

// shareWire is sharedWire's work, also the history writer's: e's bytes,
// written now if nobody has.
func shareWire(e *entry, enc *flowwire.Encoder, arena *wireArena) []byte {
	switch w := e.wire.Load(); w {
	case wireTaken:
		return nil
	case nil:
	default:
		return *w
	}
	p, err := arena.encode(enc, e.flow)
	if err != nil {
		return nil
	}
	if !e.wire.CompareAndSwap(nil, p) {
		// Another reader was first (its bytes are as good) or the
		// writer released e meanwhile (ours serve this call only).
		if w := e.wire.Load(); w != wireTaken {
			return *w
		}
	}
	return *p
}
