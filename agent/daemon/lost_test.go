package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
)

// recordingSink records the losses reported to it, in order.
type recordingSink struct {
	mu  sync.Mutex
	got []string
}

func (s *recordingSink) AddLostEvents(n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, fmt.Sprintf("ring %d", n))
}

func (s *recordingSink) AddRateLimitedDropEvents(n uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, fmt.Sprintf("limited %d", n))
}

// The observer hears of each loss once, as the growth of the datapath's
// counts since the last read; losses before the start and failed reads are
// not reported as new losses.
func TestForwardLostEvents(t *testing.T) {
	// Successive reads of the counts: a failed first read, then 5 and 9
	// from before the start (the pinned map kept them: the baseline),
	// growth, a failed read, no change, growth again.
	gone := errors.New("map gone")
	st := func(lost, limited uint64) datapath.EventStats {
		return datapath.EventStats{Lost: lost, DropEventsLimited: limited}
	}
	reads := []struct {
		st  datapath.EventStats
		err error
	}{{st(0, 0), gone}, {st(5, 9), nil}, {st(5, 9), nil}, {st(8, 9), nil}, {st(0, 0), gone}, {st(8, 9), nil}, {st(20, 30), nil}}
	var mu sync.Mutex
	i := 0
	ctx, cancel := context.WithCancel(context.Background())
	stats := func() (datapath.EventStats, error) {
		mu.Lock()
		defer mu.Unlock()
		if i == len(reads) {
			cancel()
			return st(20, 30), nil
		}
		r := reads[i]
		i++
		return r.st, r.err
	}
	sink := &recordingSink{}
	if err := forwardLostEvents(ctx, stats, sink, time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	want := []string{"ring 3", "ring 12", "limited 21"}
	if !slices.Equal(sink.got, want) {
		t.Fatalf("reported %q, want %q", sink.got, want)
	}
}

// fakeEventStats is a datapath whose loss counts a test sets.
type fakeEventStats struct {
	mu    sync.Mutex
	st    datapath.EventStats
	reads int
}

func (f *fakeEventStats) EventStats() (datapath.EventStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.st, nil
}

func (f *fakeEventStats) set(fn func(*datapath.EventStats)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.st)
}

// waitReads waits until the datapath's counts were read n more times.
func (f *fakeEventStats) waitReads(t *testing.T, n int) {
	t.Helper()
	f.mu.Lock()
	target := f.reads + n
	f.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		r := f.reads
		f.mu.Unlock()
		if r >= target {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the datapath's counts were read %d times, want %d", r, target)
		}
		time.Sleep(time.Millisecond)
	}
}

// serveObserver serves o's Observer API on a loopback port for the test.
func serveObserver(t *testing.T, o *observer.Observer) observerpb.ObserverClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.ServeListeners(ctx, l, nil) }()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return observerpb.NewObserverClient(conn)
}

// lostEvents returns the LostEvents a GetFlows stream of everything in the
// observer's ring carries, as "SOURCE n".
func lostEvents(t *testing.T, c observerpb.ObserverClient) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for {
		r, err := s.Recv()
		if err != nil {
			return out // io.EOF: the end of the ring; anything else fails the comparison
		}
		if le := r.GetLostEvents(); le != nil {
			out = append(out, fmt.Sprintf("%s %d", le.GetSource(), le.GetNumEventsLost()))
		}
	}
}

func newDaemonTestObserver(t *testing.T) *observer.Observer {
	t.Helper()
	o, err := observer.New(observer.Config{NodeName: "n1", Metadata: &metadata.Static{Snap: &metadata.Snapshot{}},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// Drop events the datapath's rate limit held back reach a GetFlows client
// as a LostEvent, through the loop Run starts and the real observer, as
// the ring buffer's losses do; the counts from before the start are not.
func TestRateLimitedDropEventsReachTheFlowStream(t *testing.T) {
	dp := &fakeEventStats{st: datapath.EventStats{Lost: 2, DropEventsLimited: 100}}
	obs := newDaemonTestObserver(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- forwardLostEvents(ctx, dp.EventStats, obs, time.Millisecond, slog.New(slog.DiscardHandler))
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	dp.waitReads(t, 1)
	dp.set(func(st *datapath.EventStats) { st.DropEventsLimited += 4000; st.Lost += 3 })
	dp.waitReads(t, 2)

	got := lostEvents(t, serveObserver(t, obs))
	want := []string{"PERF_EVENT_RING_BUFFER 3", fmt.Sprintf("%s 4000", flowpb.LostEventSource_UNKNOWN_LOST_EVENT_SOURCE)}
	if !slices.Equal(got, want) {
		t.Fatalf("lost events in the flow stream %q, want %q", got, want)
	}
}
