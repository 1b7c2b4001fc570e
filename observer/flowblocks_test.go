package observer

import (
	"context"
	"testing"
	"time"
)

// The kept blocks are found by any entry they hold, gaps between them
// hold none, the ring's laps and the memory bound drop the oldest, and a
// block with a lap's lost record is sent only from its first entry.
func TestRecentBlocks(t *testing.T) {
	var r recentBlocks
	data := make([]byte, 100)
	r.keep(0, 10, 1, false, data, 0)
	r.keep(10, 20, 2, false, data, 0)
	r.keep(30, 40, 3, true, data, 0) // 20-30: a batch that was not kept
	for seq, want := range map[uint64]uint64{0: 0, 9: 0, 10: 10, 19: 10, 30: 30, 39: 30} {
		if b, ok := r.containing(seq); !ok || b.first != want {
			t.Errorf("entry %d: block %+v %v, want the one from %d", seq, b, ok, want)
		}
	}
	for _, seq := range []uint64{20, 29, 40, 1000} {
		if b, ok := r.containing(seq); ok {
			t.Errorf("entry %d: block %+v, want none", seq, b)
		}
	}
	if data[0] = 1; (*r.list.Load())[0].data[0] != 0 {
		t.Error("a kept block shares the writer's buffer")
	}

	s := &blockSender{since: 2}
	lapped, _ := r.containing(30)
	first, _ := r.containing(0)
	second, _ := r.containing(10)
	if !s.usable(lapped, 30) || s.usable(lapped, 31) {
		t.Error("a block with a lap's lost record: only whole")
	}
	if s.usable(first, 0) || !s.usable(second, 15) {
		t.Error("since: a block that begins before it is not sent, one after it is")
	}
	if s.usable(historyBlock{data: make([]byte, maxSentBlock+1)}, 0) {
		t.Error("a block over maxSentBlock is sent")
	}

	// The ring lapped the first two.
	r.keep(40, 50, 4, false, data, 25)
	if _, ok := r.containing(5); ok || len(*r.list.Load()) != 2 {
		t.Errorf("after a lap: %d blocks", len(*r.list.Load()))
	}
	// The bound keeps the newest.
	big := make([]byte, maxRecentBlockBytes/3+1)
	for i := range uint64(4) {
		r.keep(50+10*i, 60+10*i, 5, false, big, 0)
	}
	if l := *r.list.Load(); len(l) != 2 || l[1].first != 80 {
		t.Errorf("over the bound: %d blocks, the newest from %d", len(l), l[len(l)-1].first)
	}
	r.drop()
	if _, ok := r.containing(85); ok {
		t.Error("a block after drop")
	}
}

// A follower under load waits for the block that will hold its entry and
// gets it once kept; in vain (nothing kept, or its entry in a gap), it
// goes flow by flow for a ring's worth of entries.
func TestBlockSenderAwaits(t *testing.T) {
	o := newTestObserver(t, 1023, nil)
	var r recentBlocks
	b := &blockSender{o: o, blocks: &r, ctx: context.Background()}
	data := make([]byte, 10)
	go func() {
		time.Sleep(10 * time.Millisecond)
		r.keep(0, 50, 1, false, data, 0)   // not yet
		r.keep(50, 100, 1, false, data, 0) // the one
	}()
	if blk, ok := b.await(60); !ok || blk.first != 50 || b.noWaitBefore != 0 {
		t.Fatalf("await: %+v %v, no wait before %d", blk, ok, b.noWaitBefore)
	}
	if _, ok := b.await(100); ok || b.noWaitBefore != 100+o.ring.capacity() {
		t.Fatalf("nothing kept: %v, no wait before %d", ok, b.noWaitBefore)
	}
	r.keep(120, 130, 1, false, data, 0)
	b.noWaitBefore = 0
	if _, ok := b.await(110); ok || b.noWaitBefore != 110+o.ring.capacity() {
		t.Fatalf("an entry in a gap: %v, no wait before %d", ok, b.noWaitBefore)
	}
}
