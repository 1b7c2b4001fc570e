package server

import (
	"sync"

	pb "github.com/loupe-project/loupe/api/secevents/v1"
)

// DefaultCapacity is how many events and loss notes an agent keeps.
const DefaultCapacity = 4096

// Store is a bounded ring of responses with one writer and any number of
// readers. Entries carry sequence numbers, so a reader that falls more
// than the capacity behind learns exactly how many it missed.
type Store struct {
	mu     sync.Mutex
	buf    []*pb.GetEventsResponse
	next   uint64        // sequence number of the next entry
	notify chan struct{} // closed and replaced on every Add
}

// NewStore keeps the last capacity entries (0: DefaultCapacity).
func NewStore(capacity int) *Store {
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	return &Store{buf: make([]*pb.GetEventsResponse, capacity), notify: make(chan struct{})}
}

// Add appends r; the oldest entry goes once the ring is full.
func (s *Store) Add(r *pb.GetEventsResponse) {
	s.mu.Lock()
	s.buf[s.next%uint64(len(s.buf))] = r
	s.next++
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
}

// Read returns the entries from sequence number from on, the sequence
// number to read from next, how many entries from..first were already
// overwritten, and a channel closed by the next Add.
func (s *Store) Read(from uint64) (out []*pb.GetEventsResponse, next, missed uint64, wait <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	oldest := uint64(0)
	if s.next > uint64(len(s.buf)) {
		oldest = s.next - uint64(len(s.buf))
	}
	if from < oldest {
		missed = oldest - from
		from = oldest
	}
	for i := from; i < s.next; i++ {
		out = append(out, s.buf[i%uint64(len(s.buf))])
	}
	return out, s.next, missed, s.notify
}
