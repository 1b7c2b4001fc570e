package observer

import (
	"context"
	"runtime"
	"sync"
	"testing"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

func TestValidateBufferSize(t *testing.T) {
	for n, ok := range map[int]bool{1: true, 3: true, 4095: true, 65535: true, 0: false, 2: false, 4096: false, 65534: false, -1: false} {
		if err := ValidateBufferSize(n); (err == nil) != ok {
			t.Errorf("ValidateBufferSize(%d) = %v", n, err)
		}
	}
}

func TestRingReadAndLoss(t *testing.T) {
	r, err := newRing(7)
	if err != nil {
		t.Fatal(err)
	}
	if e, lost := r.read(0); e != nil || lost != 0 {
		t.Fatal("read of an empty ring")
	}
	for range 5 {
		r.write(&entry{flow: &flowpb.Flow{}})
	}
	if r.len() != 5 {
		t.Fatalf("len = %d", r.len())
	}
	for seq := range uint64(5) {
		if e, _ := r.read(seq); e == nil || e.seq != seq {
			t.Fatalf("read(%d) = %v", seq, e)
		}
	}
	for range 20 { // 25 written, capacity 7: 0..17 lost
		r.write(&entry{flow: &flowpb.Flow{}})
	}
	if r.len() != 7 {
		t.Fatalf("len = %d, want capacity 7", r.len())
	}
	if e, lost := r.read(3); e != nil || lost != 15 {
		t.Fatalf("read(3) = %v, lost %d; want lost 15", e, lost)
	}
	if e, _ := r.read(18); e == nil || e.seq != 18 {
		t.Fatalf("read(18) = %v", e)
	}
}

// A follower that reads slower than the writer writes gets LostEvents whose
// counts, plus the flows it got, add up exactly to what was written; and the
// heap does not grow with the number of events.
func TestRingOverflowSlowReader(t *testing.T) {
	const capacity = 1023
	r, _ := newRing(capacity)
	total := uint64(10 * (capacity + 1))

	heapAfter := func(phase func()) uint64 {
		phase()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}

	run := func() (got, lost uint64) {
		start := r.head.Load()
		end := start + total
		ctx := context.Background()
		var wg sync.WaitGroup
		readerTurn := make(chan struct{})
		writerTurn := make(chan struct{})
		wg.Add(1)
		go func() { // writer: writes 3 flows for every one the reader reads
			defer wg.Done()
			for seq := start; seq < end; {
				for i := 0; i < 3*(capacity/2) && seq < end; i++ {
					r.write(&entry{flow: &flowpb.Flow{Summary: "x"}})
					seq++
				}
				readerTurn <- struct{}{}
				<-writerTurn
			}
			close(readerTurn)
		}()
		seq := start
		for range readerTurn {
			for i := 0; i < capacity/2; i++ {
				e, l := r.read(seq)
				if l > 0 {
					lost += l
					seq += l
					continue
				}
				if e == nil {
					break
				}
				got++
				seq++
			}
			writerTurn <- struct{}{}
		}
		wg.Wait()
		// Drain what is left.
		for seq < end {
			if err := r.wait(ctx, seq); err != nil {
				t.Fatal(err)
			}
			e, l := r.read(seq)
			if l > 0 {
				lost += l
				seq += l
				continue
			}
			if e != nil {
				got++
				seq++
			}
		}
		return got, lost
	}

	var got1, lost1, got2, lost2 uint64
	h1 := heapAfter(func() { got1, lost1 = run() })
	h2 := heapAfter(func() { got2, lost2 = run() })
	if got1+lost1 != total || got2+lost2 != total {
		t.Fatalf("flows+lost = %d and %d, want %d each", got1+lost1, got2+lost2, total)
	}
	if lost1 == 0 || lost2 == 0 {
		t.Fatalf("slow reader lost nothing (%d, %d)", lost1, lost2)
	}
	// The second phase wrote as many events again; a ring that held on to
	// them would have grown by about total * sizeof(flow).
	const slack = 256 << 10
	if h2 > h1+slack {
		t.Errorf("heap grew from %d to %d bytes across phases", h1, h2)
	}
	t.Logf("phase 1: %d flows, %d lost; phase 2: %d flows, %d lost; heap %d -> %d", got1, lost1, got2, lost2, h1, h2)
}

func TestRingWaitWakesFollowers(t *testing.T) {
	r, _ := newRing(15)
	const followers = 4
	var wg sync.WaitGroup
	for range followers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(0); seq < 100; seq++ {
				if err := r.wait(context.Background(), seq); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range 100 {
		r.write(&entry{flow: &flowpb.Flow{}})
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.wait(ctx, 1000); err == nil {
		t.Error("wait past the head with a cancelled context returned nil")
	}
}
