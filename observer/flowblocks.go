package observer

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/loupe-project/loupe/contract"
)

// A FlowBatches follower that runs behind the history writer is sent the
// writer's blocks (contract.FlowBatchBlocksField) instead of its flows one
// by one: the flows are then encoded and compressed once, for the disk and
// the follower, and the follower's connection carries compressed bytes.
//
// Under load the relay's follower runs tens of thousands of flows behind
// the head (its sends wait for the relay), so the writer is first; there
// the follower used to write each flow again (16 % of the agent's CPU in
// the events bench) and gRPC sent four times the bytes (13 %, mostly the
// kernel's socket writes). A follower near the head (light load) finds no
// block and sends flows as before, without delay; one a whole batch
// behind waits for the block that will hold its next flow (await).

// historyBlock is one history block the writer wrote, with the ring
// sequence numbers it covers: every entry in [first, end) is in it, as a
// flow or within a lost record.
type historyBlock struct {
	first, end uint64
	minT       int64  // the oldest record's time, unix ns
	data       []byte // header and compressed payload (history.DecodeBlock)
	// lapped: the ring overwrote entries before the writer read them; the
	// lost record that says so covers a range, and a follower that began
	// within it must not be sent it.
	lapped bool
}

const (
	// maxRecentBlockBytes bounds the memory the recent blocks take: a
	// block of 4,096 flows is 0.3–0.5 MB compressed, so this covers more
	// than a ring (65,535 flows) of the default size.
	maxRecentBlockBytes = 24 << 20
	// maxSentBlock is the largest block sent whole; a larger one (a flood
	// of incompressible flows) goes flow by flow, so a FlowBatch stays
	// far below gRPC's 4 MiB message limit.
	maxSentBlock = 1 << 20
)

// recentBlocks are the last blocks the history writer wrote, oldest first,
// kept only while a follower that accepts blocks is connected.
type recentBlocks struct {
	list      atomic.Pointer[[]historyBlock] // replaced, never changed in place
	followers atomic.Int32
	// flowsSent counts flows sent within blocks, for tests and the bench.
	flowsSent atomic.Uint64

	mu   sync.Mutex
	kept chan struct{} // closed when the next block is kept; nil: nobody waits
}

// wanted reports whether the writer should keep its blocks.
func (r *recentBlocks) wanted() bool { return r.followers.Load() > 0 }

// keep adds a block (data is copied) and drops those the ring has lapped
// (end <= oldest) and those beyond the memory bound.
func (r *recentBlocks) keep(first, end uint64, minT int64, lapped bool, data []byte, oldest uint64) {
	var cur []historyBlock
	if p := r.list.Load(); p != nil {
		cur = *p
	}
	next := make([]historyBlock, 0, len(cur)+1)
	size := len(data)
	for i := len(cur) - 1; i >= 0; i-- {
		b := cur[i]
		if b.end <= oldest || size+len(b.data) > maxRecentBlockBytes {
			break
		}
		size += len(b.data)
		next = append(next, b)
	}
	slices.Reverse(next)
	next = append(next, historyBlock{first: first, end: end, minT: minT, lapped: lapped, data: slices.Clone(data)})
	r.list.Store(&next)
	r.mu.Lock()
	if r.kept != nil {
		close(r.kept)
		r.kept = nil
	}
	r.mu.Unlock()
}

// next is closed when the next block is kept.
func (r *recentBlocks) next() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.kept == nil {
		r.kept = make(chan struct{})
	}
	return r.kept
}

// newest is the end of the newest block kept (0: none).
func (r *recentBlocks) newest() uint64 {
	if p := r.list.Load(); p != nil && len(*p) > 0 {
		return (*p)[len(*p)-1].end
	}
	return 0
}

// drop forgets every block, when the last follower left.
func (r *recentBlocks) drop() { r.list.Store(nil) }

// containing returns the block that holds seq, if one is kept.
func (r *recentBlocks) containing(seq uint64) (historyBlock, bool) {
	p := r.list.Load()
	if p == nil {
		return historyBlock{}, false
	}
	l := *p
	if len(l) == 0 || seq < l[0].first || seq >= l[len(l)-1].end {
		return historyBlock{}, false
	}
	// The first block that ends after seq; blocks are in order but may
	// leave gaps (a batch that was not kept).
	i, _ := slices.BinarySearchFunc(l, seq+1, func(b historyBlock, s uint64) int {
		switch {
		case b.end < s:
			return -1
		case b.end > s:
			return 1
		}
		return 0
	})
	if i == len(l) || l[i].first > seq {
		return historyBlock{}, false
	}
	return l[i], true
}

// acceptsBlocks tells whether the client of a FlowBatches stream reads
// FlowBlocks (contract.FlowBlocksHeader).
func acceptsBlocks(md metadata.MD) bool {
	return slices.Contains(md.Get(contract.FlowBlocksHeader), contract.FlowBlocksFormat)
}

// blockSender sends a FlowBatches follower the writer's blocks while it is
// behind the writer.
type blockSender struct {
	o      *Observer
	blocks *recentBlocks
	stream *batchStream
	ctx    context.Context
	since  int64 // unix ns; 0: none
	// noWaitBefore: after a wait in vain, the follower does not wait for
	// a block again before this entry.
	noWaitBefore uint64
}

// blockWait bounds how long a follower a batch behind the head waits for
// the writer to keep the block that will hold its next entry. At 200k
// flows/s a batch (historyBatch) takes the writer 20 ms.
const blockWait = 50 * time.Millisecond

// newBlockSender returns a blockSender for a GetFlows call that may take
// blocks, or nil: the stream must be a FlowBatches one whose client reads
// blocks, and the request (plain) one that sends every flow and lost event
// of a block as it is: follow, no filter, field mask or until. A since
// (loupe-relay resumes with one) passes only blocks that begin after it.
func (s *observerServer) newBlockSender(stream any, plain bool, since time.Time) *blockSender {
	bs, ok := stream.(*batchStream)
	if !ok || !plain || s.o.hist == nil || !bs.blocks {
		return nil
	}
	b := &blockSender{o: s.o, blocks: &s.o.hist.blocks, stream: bs, ctx: bs.Context()}
	if !since.IsZero() {
		b.since = since.UnixNano()
	}
	return b
}

// start and stop bracket the follower's stream: blocks are kept only while
// one follows.
func (b *blockSender) start() {
	if b != nil {
		b.blocks.followers.Add(1)
	}
}

func (b *blockSender) stop() {
	if b != nil && b.blocks.followers.Add(-1) == 0 {
		b.blocks.drop()
	}
}

// send sends the block that holds seq, if the writer has one, from seq
// on, and returns the sequence number after it (seq when there is none).
func (b *blockSender) send(seq uint64) (uint64, error) {
	if b == nil {
		return seq, nil
	}
	blk, ok := b.blocks.containing(seq)
	if !ok && seq >= b.noWaitBefore && b.o.ring.head.Load()-seq >= historyBatch {
		blk, ok = b.await(seq)
	}
	if !ok || !b.usable(blk, seq) {
		return seq, nil
	}
	if err := b.stream.sendBlock(blk.data, b.o.cfg.NodeName, seq); err != nil {
		return seq, err
	}
	b.blocks.flowsSent.Add(blk.end - seq)
	return blk.end, nil
}

// await waits for the block that will hold seq. A follower a whole batch
// behind the head is under load: it waits for the writer (blockWait at
// most) rather than write each flow again, so that it stays in step with
// the blocks once it reached them. A follower near the head (light load)
// never waits. When the wait is in vain (the writer is behind or failing,
// or keeps no block for seq), the follower goes flow by flow for a ring's
// worth of entries before it waits again.
func (b *blockSender) await(seq uint64) (historyBlock, bool) {
	t := time.NewTimer(blockWait)
	defer t.Stop()
	for {
		kept := b.blocks.next()
		if blk, ok := b.blocks.containing(seq); ok {
			return blk, true
		}
		if b.blocks.newest() > seq {
			break // seq fell in a gap between blocks
		}
		select {
		case <-kept:
			continue
		case <-t.C:
		case <-b.ctx.Done():
		}
		break
	}
	b.noWaitBefore = seq + b.o.ring.capacity()
	return historyBlock{}, false
}

// usable tells whether blk may be sent to a follower at seq (within it).
func (b *blockSender) usable(blk historyBlock, seq uint64) bool {
	return len(blk.data) <= maxSentBlock && blk.minT >= b.since && (seq == blk.first || !blk.lapped)
}

// sendBlock sends the pending responses and one FlowBlock after them in one
// message; the block's bytes go to gRPC as they are, without a copy (they
// are never changed).
func (b *batchStream) sendBlock(block []byte, node string, from uint64) error {
	var fb []byte
	fb = protowire.AppendTag(fb, contract.FlowBlockNodeField, protowire.BytesType)
	fb = protowire.AppendString(fb, node)
	fb = protowire.AppendTag(fb, contract.FlowBlockFromField, protowire.VarintType)
	fb = protowire.AppendVarint(fb, from)
	fb = protowire.AppendTag(fb, contract.FlowBlockDataField, protowire.BytesType)
	fb = protowire.AppendVarint(fb, uint64(len(block)))
	b.batch = protowire.AppendTag(b.batch, contract.FlowBatchBlocksField, protowire.BytesType)
	b.batch = protowire.AppendVarint(b.batch, uint64(len(fb)+len(block)))
	b.batch = append(b.batch, fb...)
	out := b.batch
	b.batch = b.bufs.next()
	return b.ServerStream.SendMsg(&encodedResponse{buf: mem.BufferSlice{mem.NewBuffer(&out, &b.bufs), mem.SliceBuffer(block)}})
}
