package observer

import (
	"context"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// DefaultBufferSize is the flow ring capacity when none is given; like
// Hubble's, capacities are 2^n-1.
const DefaultBufferSize = 65535

// entry is one flow in the ring, or a record of datapath events lost
// before they became flows, stamped with its sequence number. Exactly one
// of flow and lost is set. Entries are immutable once written.
type entry struct {
	seq  uint64
	flow *flowpb.Flow
	lost *lostRecord

	// wire is the flow's wire form (flowwire.Encoder.Append), kept by
	// the first follower that writes it until the history writer takes
	// it: a flow is then written once for the disk and every follower,
	// not once per consumer (Observer.sharedWire). The writer leaves
	// wireTaken behind. The flow itself stays immutable.
	wire atomic.Pointer[[]byte]
}

// wireTaken marks an entry the history writer has passed: no follower
// keeps bytes in it any more.
var wireTaken = new([]byte)

// lostRecord is a LostEvent with the time the agent noticed the loss.
type lostRecord struct {
	event flowpb.LostEvent
	at    timestamppb.Timestamp
}

// time is when the flow happened or the loss was noticed.
func (e *entry) time() *timestamppb.Timestamp {
	if e.lost != nil {
		return &e.lost.at
	}
	return e.flow.GetTime()
}

// ring is a bounded buffer of flows with one writer and any number of
// readers. The writer never waits; a reader that falls behind finds its next
// entry overwritten and learns exactly how many it lost.
//
// It has 2^n slots; the slot the writer is about to overwrite is not
// readable, so the capacity is 2^n-1.
type ring struct {
	mask  uint64
	slots []atomic.Pointer[entry]
	head  atomic.Uint64 // sequence number of the next write

	// Followers wait on ch; the writer closes and replaces it only when
	// someone waits, so writes stay cheap when nobody follows.
	mu      sync.Mutex
	ch      chan struct{}
	waiting atomic.Bool
}

// ValidateBufferSize checks that n is 2^k-1 with k in [1, 30].
func ValidateBufferSize(n int) error {
	if n < 1 || n > 1<<30-1 || bits.OnesCount64(uint64(n)) != bits.Len64(uint64(n)) {
		return fmt.Errorf("flow buffer size %d: must be 2^n-1 (e.g. 4095, 65535)", n)
	}
	return nil
}

func newRing(capacity int) (*ring, error) {
	if err := ValidateBufferSize(capacity); err != nil {
		return nil, err
	}
	size := uint64(capacity) + 1
	return &ring{mask: size - 1, slots: make([]atomic.Pointer[entry], size), ch: make(chan struct{})}, nil
}

// capacity is the number of flows the ring holds.
func (r *ring) capacity() uint64 { return r.mask }

// write appends e; only one goroutine may write.
func (r *ring) write(e *entry) {
	seq := r.head.Load()
	e.seq = seq
	r.slots[seq&r.mask].Store(e)
	r.head.Store(seq + 1)
	if r.waiting.Load() {
		r.mu.Lock()
		r.waiting.Store(false)
		close(r.ch)
		r.ch = make(chan struct{})
		r.mu.Unlock()
	}
}

// oldest returns the sequence number of the oldest readable entry.
func (r *ring) oldest(head uint64) uint64 {
	if head <= r.capacity() {
		return 0
	}
	return head - r.capacity()
}

// len returns how many flows the ring holds now.
func (r *ring) len() uint64 {
	h := r.head.Load()
	return h - r.oldest(h)
}

// read returns the entry with sequence seq. If it is not written yet, e is
// nil and lost is 0. If it was overwritten, e is nil and lost > 0 tells how
// many entries were lost from seq on: resume at seq+lost.
func (r *ring) read(seq uint64) (e *entry, lost uint64) {
	head := r.head.Load()
	if seq >= head {
		return nil, 0
	}
	if old := r.oldest(head); seq < old {
		return nil, old - seq
	}
	e = r.slots[seq&r.mask].Load()
	if e == nil || e.seq != seq {
		// Overwritten between the head load and the slot load.
		head = r.head.Load()
		return nil, r.oldest(head) - seq
	}
	return e, 0
}

// wait blocks until an entry with sequence seq exists or ctx is done.
func (r *ring) wait(ctx context.Context, seq uint64) error {
	_, err := r.waitOr(ctx, seq, nil)
	return err
}

// waitOr is wait that also gives up (false) when timeout fires.
func (r *ring) waitOr(ctx context.Context, seq uint64, timeout <-chan time.Time) (bool, error) {
	for {
		if r.head.Load() > seq {
			return true, nil
		}
		r.mu.Lock()
		ch := r.ch
		r.waiting.Store(true)
		r.mu.Unlock()
		// Recheck after announcing: a write that missed the flag is
		// visible here.
		if r.head.Load() > seq {
			return true, nil
		}
		select {
		case <-ch:
		case <-timeout:
			return false, nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}
