package datapath

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Return values of the programs as seen through prog.Run.
const (
	retXDPDrop = 1
	retXDPPass = 2
	retTCXNext = 0xffffffff // TCX_NEXT (-1)
	retTCXDrop = 2
)

// loIfindex is where BPF_PROG_TEST_RUN puts test packets when no context
// names a device: the loopback of the calling netns, for skb and XDP alike.
const loIfindex = 1

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132

	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to load BPF programs")
	}
}

// newTestDatapath loads the datapath into a fresh bpffs under a temp dir and
// removes everything when the test ends, even on failure.
func newTestDatapath(tb testing.TB, cfg Config) *Datapath {
	tb.Helper()
	requireRoot(tb)
	root := tb.TempDir()
	cfg.BPFRoot = root
	tb.Cleanup(func() {
		if err := Cleanup(root); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
		if ok, _ := isBPFFS(root); ok {
			_ = unix.Unmount(root, unix.MNT_DETACH)
		}
	})
	d, err := Load(cfg)
	if err != nil {
		tb.Fatalf("load: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// pkt describes a test packet; build turns it into an Ethernet frame.
type pkt struct {
	src, dst     netip.Addr
	proto        uint8
	sport, dport uint16
	flags        uint8 // TCP flags
	icmpType     uint8
	icmpID       uint16
	payload      int
}

func (p pkt) l4() []byte {
	var h []byte
	switch p.proto {
	case protoTCP:
		h = make([]byte, 20)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint32(h[4:], 1000)
		h[12] = 5 << 4
		h[13] = p.flags
		binary.BigEndian.PutUint16(h[14:], 65535)
	case protoUDP:
		h = make([]byte, 8)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
		binary.BigEndian.PutUint16(h[4:], uint16(8+p.payload))
	case protoSCTP:
		h = make([]byte, 12)
		binary.BigEndian.PutUint16(h[0:], p.sport)
		binary.BigEndian.PutUint16(h[2:], p.dport)
	case protoICMP, protoICMPv6:
		h = make([]byte, 8)
		h[0] = p.icmpType
		binary.BigEndian.PutUint16(h[4:], p.icmpID)
		binary.BigEndian.PutUint16(h[6:], 1)
	}
	return append(h, make([]byte, p.payload)...)
}

func (p pkt) build() []byte {
	l4 := p.l4()
	eth := []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0, 0}
	if p.src.Is4() {
		binary.BigEndian.PutUint16(eth[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		ip[8] = 64
		ip[9] = p.proto
		s, d := p.src.As4(), p.dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		return append(append(eth, ip...), l4...)
	}
	binary.BigEndian.PutUint16(eth[12:], 0x86dd)
	ip := make([]byte, 40)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(l4)))
	ip[6] = p.proto
	ip[7] = 64
	s, d := p.src.As16(), p.dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return append(append(eth, ip...), l4...)
}

func (p pkt) reply() pkt {
	r := p
	r.src, r.dst, r.sport, r.dport = p.dst, p.src, p.dport, p.sport
	return r
}

func run(tb testing.TB, prog *ebpf.Program, data []byte) uint32 {
	tb.Helper()
	ret, err := prog.Run(&ebpf.RunOptions{Data: data})
	if err != nil {
		tb.Fatalf("run %s: %v", prog, err)
	}
	return ret
}

// drainEvents returns every event currently in the ring buffer. Programs
// submit synchronously, so after prog.Run returns its events are there.
func drainEvents(tb testing.TB, d *Datapath) []Event {
	tb.Helper()
	rd, err := ringbuf.NewReader(d.objs.Events)
	if err != nil {
		tb.Fatalf("ringbuf reader: %v", err)
	}
	defer rd.Close()
	rd.SetDeadline(time.Now())
	var out []Event
	for {
		rec, err := rd.Read()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			tb.Fatalf("read ringbuf: %v", err)
		}
		var ev Event
		if err := DecodeEvent(rec.RawSample, &ev); err != nil {
			tb.Fatalf("decode event: %v", err)
		}
		ev.Data = append([]byte(nil), ev.Data...)
		out = append(out, ev)
	}
}

// counter returns the summed counter for (reason, dir, ep) over all rules.
func counter(tb testing.TB, d *Datapath, reason, dir uint8, ep uint32) (packets, bytes uint64) {
	tb.Helper()
	cs, err := d.Counters()
	if err != nil {
		tb.Fatal(err)
	}
	for _, c := range cs {
		if c.Reason == reason && c.Direction == dir && c.EndpointID == ep {
			packets += c.Packets
			bytes += c.Bytes
		}
	}
	return packets, bytes
}
