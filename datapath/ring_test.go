package datapath

import (
	"context"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

func TestEventsRingBytes(t *testing.T) {
	page := uint32(os.Getpagesize())
	for _, c := range []struct {
		in, want uint32
		err      string
	}{
		{0, DefaultEventsRingBytes, ""},
		{page, page, ""},
		{1 << 24, 1 << 24, ""},
		{page / 2, 0, "at least the page size"},
		{3 << 20, 0, "power of two"},
	} {
		got, err := eventsRingBytes(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("eventsRingBytes(%d) = %d, %v; want an error with %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("eventsRingBytes(%d) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

// The events ring gets the configured size, and the tracepoint programs
// that write into it share the pinned ring instead of replacing it with
// their object's size: one ring, one reader.
func TestPrivilegedEventsRingSharedAtItsSize(t *testing.T) {
	const size = 1 << 21
	d := newTestDatapath(t, Config{EventsRingBytes: size})
	if got := d.objs.Events.MaxEntries(); got != size {
		t.Fatalf("events ring is %d bytes, want %d", got, size)
	}
	want := mapID(t, d.objs.Events)
	k, err := LoadKernelDrops(KernelDropConfig{BPFRoot: d.BPFRoot()})
	if err != nil {
		t.Fatalf("load kernel drops: %v", err)
	}
	defer k.Close()
	tc, err := LoadTCPEvents(TCPConfig{BPFRoot: d.BPFRoot()})
	if err != nil {
		t.Fatalf("load tcp events: %v", err)
	}
	defer tc.Close()
	for name, m := range map[string]*ebpf.Map{"kernel drops": k.objs.Events, "tcp events": tc.objs.Events} {
		if got := mapID(t, m); got != want || m.MaxEntries() != size {
			t.Errorf("%s writes ring %d of %d bytes, not the datapath's %d of %d", name, got, m.MaxEntries(), want, size)
		}
	}
}

func mapID(t *testing.T, m *ebpf.Map) ebpf.MapID {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("map info has no id")
	}
	return id
}

// A reader that keeps up with a busy ring pauses instead of waiting on it
// after each record (see busyPause): without the pause, the kernel wakes
// the reader for nearly every event, which cost the writing program 2.4
// times its run time (BenchmarkFromPodEventEveryPacket). Every event still
// reaches the sink.
func TestPrivilegedReaderPausesOnBusyRing(t *testing.T) {
	d := newTestDatapath(t, Config{})
	withEndpoint(t, d, EndpointInfo{})
	var pauses atomic.Int64
	busyWait = func(d time.Duration) { pauses.Add(1); time.Sleep(d) }
	defer func() { busyWait = time.Sleep }()

	var got atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.ReadEvents(ctx, func([]byte) { got.Add(1) }) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("read events: %v", err)
		}
	}()

	syn := benchTCP
	syn.flags, syn.payload = tcpSYN, 0
	const events = 20000 // one SYN, one event: 20k of 16 MiB
	if _, err := d.objs.LoupeFromPod.Run(&ebpf.RunOptions{Data: syn.build(), Repeat: events}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got.Load() < events && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := got.Load(); n != events {
		t.Fatalf("sink got %d events, want %d", n, events)
	}
	if pauses.Load() == 0 {
		t.Errorf("the reader never paused on a ring that %d events kept busy: it waited on it after each record", events)
	}
}
