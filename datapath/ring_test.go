package datapath

import (
	"os"
	"strings"
	"testing"

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
