package datapath

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// loadTestKernelDrops loads the datapath and the kfree_skb tracepoint in a
// fresh bpffs, removed (with the tracepoint's link) when the test ends.
func loadTestKernelDrops(t *testing.T, deny []string) (*Datapath, *KernelDrops, map[uint32]string) {
	return loadTestKernelDropsRate(t, deny, 100000)
}

func loadTestKernelDropsRate(t *testing.T, deny []string, rate uint32) (*Datapath, *KernelDrops, map[uint32]string) {
	t.Helper()
	d := newTestDatapath(t, Config{})
	names, err := KernelEnum(EnumSkbDropReason)
	if err != nil {
		t.Skipf("kernel btf: %v", err)
	}
	vals, err := ReasonValues(names, DropReasonPrefix, deny)
	if err != nil {
		t.Fatal(err)
	}
	k, err := LoadKernelDrops(KernelDropConfig{BPFRoot: d.BPFRoot(), Deny: vals, EventsPerSecond: rate})
	if err != nil {
		t.Fatalf("load kernel drops: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return d, k, names
}

// netnsIno is the inode of a network namespace handle.
func netnsIno(t *testing.T, h netns.NsHandle) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// A UDP datagram to a closed port in a namespace of the test's own is freed
// by the kernel with NO_SOCKET: the tracepoint reports it with that
// namespace's inode, the kernel's reason value, the packet's addresses and
// ports and a location in the kernel; a reason on the deny-list is not
// reported.
func TestPrivilegedKernelDropNoSocket(t *testing.T) {
	d, k, names := loadTestKernelDrops(t, []string{"NOT_SPECIFIED", "QUEUE_PURGE"})

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h := newNetns(t, "kdrop17-dp")
	defer netns.Set(orig)
	setNetns(t, h)
	ino := netnsIno(t, h)
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if l, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(l) != nil {
		t.Fatalf("lo up: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan Event, 64)
	go func() {
		_ = d.ReadEvents(ctx, func(raw []byte) {
			var ev Event
			if DecodeEvent(raw, &ev) == nil && ev.Flags&FlagKernel != 0 && ev.NetnsIno == ino {
				ev.Data = nil
				select {
				case got <- ev:
				default:
				}
			}
		})
	}()
	send := func(port int) {
		c, err := net.Dial("udp4", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("kdrop17"))
	}
	// The reader may start after the first send: send until one arrives.
	var ev Event
	deadline := time.Now().Add(10 * time.Second)
loop:
	for {
		send(9)
		select {
		case ev = <-got:
			break loop
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("no kernel drop of the datagram to a closed port")
		}
	}
	if names[ev.KernelReason] != "SKB_DROP_REASON_NO_SOCKET" {
		t.Errorf("reason %d (%s), want SKB_DROP_REASON_NO_SOCKET", ev.KernelReason, names[ev.KernelReason])
	}
	loopback := netip.MustParseAddr("127.0.0.1")
	if ev.Family != 4 || ev.Src != loopback || ev.Dst != loopback || ev.DstPort != 9 || ev.Proto != unix.IPPROTO_UDP {
		t.Errorf("event %+v: want UDP 127.0.0.1 -> 127.0.0.1:9", ev)
	}
	if ev.Ifindex != uint32(lo.Index) || ev.Location == 0 || ev.Type != 1 || ev.Verdict != 2 {
		t.Errorf("event %+v: want ifindex %d, a location, a DROPPED drop record", ev, lo.Index)
	}
	if fn := NewKallsyms("").Function(ev.Location); fn == "" {
		t.Log("kallsyms hides addresses here; no function name")
	} else {
		t.Logf("dropped in %s", fn)
	}

	// Deny NO_SOCKET: no more records of it.
	noSock, _ := ReasonValues(names, DropReasonPrefix, []string{"NO_SOCKET"})
	if err := k.SetDeny(noSock); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	for len(got) > 0 {
		<-got
	}
	for range 20 {
		send(9)
	}
	select {
	case ev := <-got:
		t.Errorf("a denied reason was reported: %+v", ev)
	case <-time.After(500 * time.Millisecond):
	}
}

// The tracepoint's link is pinned; a second load replaces it (one link
// stays) and Cleanup detaches and removes it.
func TestPrivilegedKernelDropsPinnedAndCleaned(t *testing.T) {
	d, k, _ := loadTestKernelDrops(t, nil)
	pin := filepath.Join(d.BPFRoot(), tracingDir, PinKfreeSkb)
	first, err := pinnedLinkID(pin)
	if err != nil {
		t.Fatal(err)
	}
	k.Close()
	k2, err := LoadKernelDrops(KernelDropConfig{BPFRoot: d.BPFRoot()})
	if err != nil {
		t.Fatal(err)
	}
	defer k2.Close()
	second, err := pinnedLinkID(pin)
	if err != nil || second == first {
		t.Fatalf("second load: link %d (first %d), %v", second, first, err)
	}
	if l, err := link.NewFromID(first); err == nil {
		l.Close()
		t.Errorf("the first link %d is still alive", first)
	}
	// Detached for a benchmark's baseline, then attached again.
	if err := SetKernelDropsAttached(d.BPFRoot(), false); err != nil {
		t.Fatal(err)
	}
	if l, err := link.NewFromID(second); err == nil {
		l.Close()
		t.Errorf("link %d alive after detach", second)
	}
	if err := SetKernelDropsAttached(d.BPFRoot(), true); err != nil {
		t.Fatal(err)
	}
	if second, err = pinnedLinkID(pin); err != nil {
		t.Fatalf("no link after attach: %v", err)
	}
	k2.Close()
	if err := Cleanup(d.BPFRoot()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(pin); !os.IsNotExist(err) {
		t.Errorf("pin left after cleanup: %v", err)
	}
	if l, err := link.NewFromID(second); err == nil {
		l.Close()
		t.Errorf("link %d alive after cleanup", second)
	}
}

// The tracepoint's own rate limit holds back what exceeds it and counts
// it (the agent turns the count into LostEvents); drops with neither
// device nor socket are counted apart.
func TestPrivilegedKernelDropRateLimit(t *testing.T) {
	d, _, _ := loadTestKernelDropsRate(t, []string{"NOT_SPECIFIED", "QUEUE_PURGE"}, 1)

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	h := newNetns(t, "kdrop17-rl")
	defer netns.Set(orig)
	setNetns(t, h)
	if l, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(l) != nil {
		t.Fatalf("lo up: %v", err)
	}
	before, err := d.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	// Unconnected: the port's ICMP errors do not fail the next send.
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	for range 200 {
		if _, err := c.WriteTo([]byte("kdrop17"), to); err != nil {
			t.Fatal(err)
		}
	}
	after, err := d.EventStats()
	if err != nil {
		t.Fatal(err)
	}
	// One token per CPU: at most one record per CPU, the rest limited.
	// Other drops of the machine may take this test's tokens, never add
	// to its 200.
	if n := after.KernelDropsLimited - before.KernelDropsLimited; n < 190 {
		t.Errorf("%d kernel-drop events limited of 200 drops at 1/s", n)
	}
}
