package datapath

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/loupe-project/loupe/contract"
)

// TestResetReasonsMatchRunningKernel checks that loupe names every
// enum sk_rst_reason value as /sys/kernel/btf/vmlinux does.
func TestResetReasonsMatchRunningKernel(t *testing.T) {
	f, err := os.Open("/sys/kernel/btf/vmlinux")
	if err != nil {
		t.Skipf("no kernel BTF: %v", err)
	}
	defer f.Close()
	raw, err := btf.LoadSpecFromReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var e *btf.Enum
	if err := raw.TypeByName(EnumSkRstReason, &e); err != nil {
		t.Skipf("kernel without reset reasons: %v", err)
	}
	names, err := KernelEnum(EnumSkRstReason)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range e.Values {
		if got := names[uint32(v.Value)]; got != v.Name {
			t.Errorf("reason %d: loupe names it %q, vmlinux %q", v.Value, got, v.Name)
		}
	}
	if len(names) != len(e.Values) {
		t.Errorf("loupe has %d reasons, vmlinux %d", len(names), len(e.Values))
	}
}

// loadTestTCP loads the datapath and the TCP tracepoints in a fresh bpffs,
// removed (with their links) when the test ends.
func loadTestTCP(t *testing.T, rate uint32) (*Datapath, *TCPEvents) {
	t.Helper()
	d := newTestDatapath(t, Config{})
	k, err := LoadTCPEvents(TCPConfig{BPFRoot: d.BPFRoot(), EventsPerSecond: rate})
	if err != nil {
		t.Fatalf("load tcp events: %v", err)
	}
	t.Cleanup(func() { k.Close() })
	return d, k
}

// tcpRecords collects the TCP records of namespace ino until ctx is done.
type tcpRecords struct {
	mu  sync.Mutex
	evs []Event
}

func (r *tcpRecords) read(ctx context.Context, d *Datapath, ino uint64) {
	_ = d.ReadEvents(ctx, func(raw []byte) {
		var ev Event
		if DecodeEvent(raw, &ev) == nil && ev.Flags&(FlagTCPRetransmit|FlagTCPReset) != 0 && ev.NetnsIno == ino {
			ev.Data = nil
			r.mu.Lock()
			r.evs = append(r.evs, ev)
			r.mu.Unlock()
		}
	})
}

func (r *tcpRecords) all() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.evs...)
}

// enterTestNetns moves the locked thread into a new namespace with lo up
// and returns its inode; the thread goes back when the test ends.
func enterTestNetns(t *testing.T, name string) uint64 {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	h := newNetns(t, name)
	t.Cleanup(func() {
		_ = netns.Set(orig)
		orig.Close()
		runtime.UnlockOSThread()
	})
	setNetns(t, h)
	if l, err := netlink.LinkByName("lo"); err != nil || netlink.LinkSetUp(l) != nil {
		t.Fatalf("lo up: %v", err)
	}
	return netnsIno(t, h)
}

// A connect to a closed port: the stack sends a reset with reason
// NO_SOCKET from the closed port, and the client's socket receives it.
func TestPrivilegedTCPResetClosedPort(t *testing.T) {
	requireRoot(t)
	d, _ := loadTestTCP(t, 100000)
	names, err := KernelEnum(EnumSkRstReason)
	if err != nil {
		t.Skipf("kernel btf: %v", err)
	}
	ino := enterTestNetns(t, fmt.Sprintf("tcp17-rst-%d", os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recs tcpRecords
	go recs.read(ctx, d, ino)
	time.Sleep(100 * time.Millisecond)

	c, err := net.DialTimeout("tcp4", "127.0.0.1:9", 2*time.Second)
	if err == nil {
		c.Close()
		t.Fatal("connect to a closed port succeeded")
	}
	var sent, received *Event
	deadline := time.Now().Add(5 * time.Second)
	for (sent == nil || received == nil) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		for _, ev := range recs.all() {
			if ev.Flags&FlagTCPReset == 0 || ev.Family != 4 {
				continue
			}
			switch {
			case ev.Direction == contract.DirectionEgress && ev.SrcPort == 9:
				sent = &ev
			case ev.Direction == contract.DirectionIngress && ev.SrcPort == 9:
				received = &ev
			}
		}
	}
	if sent == nil || received == nil {
		t.Fatalf("reset sent %v, received %v; records %+v", sent, received, recs.all())
	}
	if got := names[sent.KernelReason]; got != ResetReasonPrefix+"NO_SOCKET" {
		t.Errorf("reset reason %d (%s), want SK_RST_REASON_NO_SOCKET", sent.KernelReason, got)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	if sent.Src != lo || sent.Dst != lo || sent.DstPort == 0 || sent.Proto != 6 || sent.Type != contract.MessageTypeTrace {
		t.Errorf("sent reset %+v: want TCP 127.0.0.1:9 -> 127.0.0.1:client", sent)
	}
	if received.DstPort != sent.DstPort || received.Src != lo {
		t.Errorf("received reset %+v: want 127.0.0.1:9 -> client port %d", received, sent.DstPort)
	}
}

var ssRetransRE = regexp.MustCompile(`retrans:\d+/(\d+)`)

// ssRetrans is the sender's retransmitted segments of the connection from
// local port lport, as ss -ti reports them inside namespace name.
func ssRetrans(t *testing.T, name string, lport uint16) uint64 {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", name, "ss", "-tin", "sport", "= :"+strconv.Itoa(int(lport))).CombinedOutput()
	if err != nil {
		t.Fatalf("ss: %v: %s", err, out)
	}
	m := ssRetransRE.FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(string(m[1]), 10, 64)
	return n
}

// Random loss on a connection's path (iptables statistic, no netem): the
// retransmissions the tracepoint counts for the sender match what ss -ti
// reports for its socket, both summed from the records and as the last
// record's running total.
func TestPrivilegedTCPRetransmitMatchesSS(t *testing.T) {
	requireRoot(t)
	d, k := loadTestTCP(t, 100000)
	name := fmt.Sprintf("tcp17-rtx-%d", os.Getpid())
	ino := enterTestNetns(t, name)
	if out, err := exec.Command("ip", "netns", "exec", name, "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "5201",
		"-m", "statistic", "--mode", "random", "--probability", "0.02", "-j", "DROP").CombinedOutput(); err != nil {
		t.Skipf("iptables statistic: %v: %s", err, out)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recs tcpRecords
	go recs.read(ctx, d, ino)

	ln, err := net.Listen("tcp4", "127.0.0.1:5201")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		_, _ = io.Copy(io.Discard, s)
	}()
	c, err := net.Dial("tcp4", "127.0.0.1:5201")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lport := uint16(c.LocalAddr().(*net.TCPAddr).Port)
	buf := make([]byte, 64<<10)
	end := time.Now().Add(3 * time.Second)
	for time.Now().Before(end) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	// Let the last retransmissions happen while the socket still exists.
	time.Sleep(500 * time.Millisecond)
	want := ssRetrans(t, name, lport)
	time.Sleep(300 * time.Millisecond)

	var sum, last uint64
	for _, ev := range recs.all() {
		if ev.Flags&FlagTCPRetransmit == 0 || ev.SrcPort != lport || ev.DstPort != 5201 {
			continue
		}
		sum += ev.PacketsFwd
		last = max(last, ev.PacketsRev)
	}
	t.Logf("ss retrans %d; records: sum %d, running total %d", want, sum, last)
	if want < 10 {
		t.Fatalf("only %d retransmissions: the loss did not take", want)
	}
	within := func(got uint64) bool { return got*10 >= want*9 && got*10 <= want*11 }
	if !within(sum) || !within(last) {
		t.Errorf("retransmissions: records sum %d, running total %d; ss %d (want within 10%%)", sum, last, want)
	}
	if s, err := k.Stats(); err != nil || s.Limited != 0 {
		t.Errorf("stats %+v, %v: nothing should be rate-limited at 100k/s", s, err)
	}
}

// Past the node's rate limit, TCP records are held back and counted, not
// written.
func TestPrivilegedTCPEventsRateLimited(t *testing.T) {
	requireRoot(t)
	d, k := loadTestTCP(t, 1)
	ino := enterTestNetns(t, fmt.Sprintf("tcp17-lim-%d", os.Getpid()))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var recs tcpRecords
	go recs.read(ctx, d, ino)
	const connects = 50
	for range connects {
		if c, err := net.DialTimeout("tcp4", "127.0.0.1:9", time.Second); err == nil {
			c.Close()
		}
	}
	time.Sleep(200 * time.Millisecond)
	s, err := k.Stats()
	if err != nil {
		t.Fatal(err)
	}
	got := len(recs.all())
	// Each connect makes two records (reset sent, reset received); a
	// bucket of one token per CPU lets a handful through in this time.
	if s.Limited == 0 || got >= 2*connects || uint64(got)+s.Limited < 2*connects {
		t.Errorf("%d records written, %d held back, of %d", got, s.Limited, 2*connects)
	}
}
