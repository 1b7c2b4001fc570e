package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"github.com/cilium/ebpf"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/observertest"
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
// counts since the last read; on a first start (no record of earlier
// reports) the counts before it, and failed reads, are not reported as
// new losses.
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
	path := filepath.Join(t.TempDir(), lostEventsStateFile)
	if err := forwardLostEvents(ctx, stats, sink, path, time.Millisecond, slog.New(slog.DiscardHandler)); err != nil {
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

// lostEvents returns the LostEvents a GetFlows stream of everything in the
// observer's ring carries, as "SOURCE n".
func lostEvents(t *testing.T, c observerpb.ObserverClient) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The agent is ready before its observer socket exists: wait for it.
	s, err := c.GetFlows(ctx, &observerpb.GetFlowsRequest{}, grpc.WaitForReady(true))
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

// lostLifetime runs the loss reporter as one agent lifetime does, with a
// new observer and the state file at path: it lets during change the
// datapath's counts while it runs, and returns the LostEvents the
// observer streams.
func lostLifetime(t *testing.T, dp *fakeEventStats, path string, during func(*datapath.EventStats)) []string {
	t.Helper()
	obs := newDaemonTestObserver(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- forwardLostEvents(ctx, dp.EventStats, obs, path, time.Millisecond, slog.New(slog.DiscardHandler))
	}()
	// The second read begins after the first one's reports are made.
	dp.waitReads(t, 2)
	if during != nil {
		dp.set(during)
		dp.waitReads(t, 2)
	}
	got := lostEvents(t, observerpb.NewObserverClient(observertest.Dial(t, observertest.Serve(t, obs))))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return got
}

// Drop events the datapath's rate limit held back reach a GetFlows client
// as a LostEvent, through the loop Run starts and the real observer, as
// the ring buffer's losses do; the counts from before the first start
// (no record of earlier reports) are not.
func TestRateLimitedDropEventsReachTheFlowStream(t *testing.T) {
	dp := &fakeEventStats{st: datapath.EventStats{Lost: 2, DropEventsLimited: 100}}
	got := lostLifetime(t, dp, filepath.Join(t.TempDir(), lostEventsStateFile), func(st *datapath.EventStats) {
		st.DropEventsLimited += 4000
		st.Lost += 3
	})
	want := []string{"PERF_EVENT_RING_BUFFER 3", fmt.Sprintf("%s 4000", flowpb.LostEventSource_UNKNOWN_LOST_EVENT_SOURCE)}
	if !slices.Equal(got, want) {
		t.Fatalf("lost events in the flow stream %q, want %q", got, want)
	}
}

// Losses while no agent runs are reported by the next agent: the pinned
// counts grow between two lifetimes, and the second one's flow stream
// carries that growth, not less (the baseline) and not the first
// lifetime's losses again.
func TestLostEventsWhileTheAgentIsDownAreReportedAfterRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), lostEventsStateFile)
	dp := &fakeEventStats{st: datapath.EventStats{Lost: 5, DropEventsLimited: 9}}
	got := lostLifetime(t, dp, path, func(st *datapath.EventStats) {
		st.Lost += 3
		st.DropEventsLimited += 10
	})
	if want := []string{"PERF_EVENT_RING_BUFFER 3", "UNKNOWN_LOST_EVENT_SOURCE 10"}; !slices.Equal(got, want) {
		t.Fatalf("first lifetime: lost events %q, want %q", got, want)
	}
	// The agent is down; the datapath keeps counting.
	dp.set(func(st *datapath.EventStats) {
		st.Lost += 12
		st.DropEventsLimited += 100
	})
	got = lostLifetime(t, dp, path, nil)
	if want := []string{"PERF_EVENT_RING_BUFFER 12", "UNKNOWN_LOST_EVENT_SOURCE 100"}; !slices.Equal(got, want) {
		t.Fatalf("after the restart: lost events %q, want %q", got, want)
	}
	// A restart with nothing lost in between reports nothing.
	if got := lostLifetime(t, dp, path, nil); len(got) != 0 {
		t.Fatalf("after a restart without losses: lost events %q", got)
	}
}

// The record of the counts reported is read at start whatever state it is
// in: a missing or corrupt record is logged and the current counts are
// the baseline; a count below the record (the map was recreated) is
// reported in full; the record is rewritten with the counts reported, and
// a failure to write it is logged, never fatal.
func TestLostEventsStateFile(t *testing.T) {
	counts := datapath.EventStats{Read: 1000, Lost: 7, DropEventsLimited: 9}
	after := `{"version":1,"ringBufferFull":7,"dropEventsRateLimited":9}`
	for _, tc := range []struct {
		name     string
		file     *string // nil: no file
		noDir    bool    // the state dir is gone: writes fail
		want     []string
		wantLog  string
		wantFile string
	}{
		{name: "first start", want: nil, wantLog: "level=INFO msg=\"lost events: no record", wantFile: after},
		{name: "recorded", file: ptr(`{"version":1,"ringBufferFull":2,"dropEventsRateLimited":4}`),
			want: []string{"ring 5", "limited 5"}, wantFile: after},
		{name: "nothing new", file: ptr(after + "\n"), wantFile: after},
		{name: "ring map recreated", file: ptr(`{"version":1,"ringBufferFull":50,"dropEventsRateLimited":4}`),
			want: []string{"ring 7", "limited 5"}, wantLog: "level=WARN msg=\"lost events: a datapath count went back", wantFile: after},
		{name: "both recreated", file: ptr(`{"version":1,"ringBufferFull":50,"dropEventsRateLimited":40}`),
			want: []string{"ring 7", "limited 9"}, wantLog: "count=drop_events_rate_limited reported=40 now=9", wantFile: after},
		{name: "torn", file: ptr(`{"version":1,"ringBuff`), wantLog: "level=WARN msg=\"lost events: cannot use", wantFile: after},
		{name: "empty", file: ptr(""), wantLog: "err=\"decode: EOF\"", wantFile: after},
		{name: "not json", file: ptr("\x00\x01garbage"), wantLog: "level=WARN", wantFile: after},
		{name: "other version", file: ptr(`{"version":2,"ringBufferFull":2,"dropEventsRateLimited":4}`),
			wantLog: "unsupported version 2", wantFile: after},
		{name: "unknown field", file: ptr(`{"version":1,"ringBufferFull":2,"dropEventsRateLimited":4,"x":1}`),
			wantLog: "unknown field", wantFile: after},
		{name: "trailing data", file: ptr(`{"version":1,"ringBufferFull":2,"dropEventsRateLimited":4}{}`),
			wantLog: "trailing data", wantFile: after},
		{name: "negative", file: ptr(`{"version":1,"ringBufferFull":-1,"dropEventsRateLimited":4}`),
			wantLog: "level=WARN msg=\"lost events: cannot use", wantFile: after},
		{name: "unwritable", noDir: true, wantLog: "level=WARN msg=\"lost events: record the counts reported; retrying"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.noDir {
				dir = filepath.Join(dir, "gone")
			}
			path := filepath.Join(dir, lostEventsStateFile)
			if tc.file != nil {
				if err := os.WriteFile(path, []byte(*tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			sink := &recordingSink{}
			// A done context and a long interval: the start's read only.
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			stats := func() (datapath.EventStats, error) { return counts, nil }
			if err := forwardLostEvents(ctx, stats, sink, path, time.Hour, log); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sink.got, tc.want) {
				t.Errorf("reported %q, want %q", sink.got, tc.want)
			}
			if !strings.Contains(logs.String(), tc.wantLog) {
				t.Errorf("log lacks %q:\n%s", tc.wantLog, logs.String())
			}
			if tc.wantLog == "" && logs.Len() > 0 {
				t.Errorf("unexpected log:\n%s", logs.String())
			}
			b, err := os.ReadFile(path)
			switch {
			case tc.wantFile == "":
				if !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("state file: %q %v, want none", b, err)
				}
			case err != nil || strings.TrimSpace(string(b)) != tc.wantFile:
				t.Errorf("state file %q %v, want %s", b, err, tc.wantFile)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

// Through the real datapath and agent: drop events the rate limit holds
// back while no agent runs reach the next agent's flow stream as a
// LostEvent with exactly the count the datapath kept.
func TestPrivilegedRateLimitedDropEventsWhileDownReachTheFlowStream(t *testing.T) {
	netns, bpfRoot := privilegedNode(t)
	dir := t.TempDir()
	cfg := Config{
		NodeName: "node-lost", StateDir: filepath.Join(dir, "state"), BPFRoot: bpfRoot,
		Socket: filepath.Join(dir, "run", "agent.sock"), XDPMode: "generic", DropEventsPerSecond: 1,
		PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.77.5.0/24")}, NetNS: netns,
		NewObserver: func(p ObserverParams) (Observer, error) {
			return observer.New(observer.Config{NodeName: p.NodeName, Metadata: p.Metadata, Log: p.Log})
		},
		Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	startAgent(t, cfg).stop(t)

	// No agent runs: a pod sends spoofed packets, which the datapath drops
	// with only a token's worth of drop events.
	dp, err := datapath.Load(datapath.Config{BPFRoot: bpfRoot, DropEventsPerSecond: 1})
	if err != nil {
		t.Fatal(err)
	}
	before, err := dp.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	// The test run's packets arrive on the loopback device, ifindex 1.
	if err := dp.UpsertEndpoint(1, datapath.EndpointInfo{ID: 42, Identity: 1000, IPv4: netip.MustParseAddr("10.77.5.10")}); err != nil {
		t.Fatal(err)
	}
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(bpfRoot, "progs", datapath.PinTCXIngress), nil)
	if err != nil {
		t.Fatal(err)
	}
	const n = 5000
	if _, err := prog.Run(&ebpf.RunOptions{Data: spoofedUDP("10.0.0.99", "10.77.5.1"), Repeat: n}); err != nil {
		t.Fatal(err)
	}
	prog.Close()
	after, err := dp.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	if err := dp.DeleteEndpoint(1); err != nil {
		t.Fatal(err)
	}
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}
	limited := after.DropEventsLimited - before.DropEventsLimited
	if limited < n-10 || after.Lost != before.Lost {
		t.Fatalf("datapath counts %+v, then %+v: want about %d drop events held back, none lost", before, after, n)
	}

	r := startAgent(t, cfg)
	defer r.stop(t)
	conn, err := grpc.NewClient("unix://"+filepath.Join(dir, "run", ObserverSocketName), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := observerpb.NewObserverClient(conn)
	want := []string{fmt.Sprintf("UNKNOWN_LOST_EVENT_SOURCE %d", limited)}
	var got []string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if got = lostEvents(t, c); slices.Equal(got, want) {
			return
		}
	}
	t.Fatalf("lost events in the flow stream %q, want %q", got, want)
}

// spoofedUDP is an Ethernet/IPv4/UDP packet from src to dst, port 53.
func spoofedUDP(src, dst string) []byte {
	b := make([]byte, 14+20+8)
	copy(b, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00})
	ip := b[14:]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], 28)
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	udp := ip[20:]
	binary.BigEndian.PutUint16(udp[0:], 1)
	binary.BigEndian.PutUint16(udp[2:], 53)
	binary.BigEndian.PutUint16(udp[4:], 8)
	return b
}

// Kernel-drop events the tracepoint's rate limit held back reach the
// observer with the rate-limited drop events.
func TestKernelDropLossesForwarded(t *testing.T) {
	stats := withKernelDropLosses(func() (datapath.EventStats, error) {
		return datapath.EventStats{DropEventsLimited: 3, KernelDropsLimited: 4, KernelDropsNoNetns: 9}, nil
	})
	s, err := stats()
	if err != nil || s.DropEventsLimited != 7 {
		t.Errorf("rate-limited %d, %v; want 3 + 4", s.DropEventsLimited, err)
	}
}

// TCP events the tracepoints' rate limit held back reach the observer
// with the rate-limited drop events; with TCP events off, nothing changes.
func TestTCPLossesForwarded(t *testing.T) {
	base := func() (datapath.EventStats, error) { return datapath.EventStats{DropEventsLimited: 3}, nil }
	stats := withTCPLosses(base, func() (datapath.TCPStats, error) { return datapath.TCPStats{Limited: 5, NoNetns: 8}, nil })
	if s, err := stats(); err != nil || s.DropEventsLimited != 8 {
		t.Errorf("rate-limited %d, %v; want 3 + 5", s.DropEventsLimited, err)
	}
	if s, err := withTCPLosses(base, nil)(); err != nil || s.DropEventsLimited != 3 {
		t.Errorf("without TCP events: %d, %v", s.DropEventsLimited, err)
	}
}
