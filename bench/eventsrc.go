package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/loupe-project/loupe/datapath"
)

// eventSource writes real datapath events into a node agent's ring buffer
// without traffic: it runs the node's own pinned TCX programs through
// BPF_PROG_TEST_RUN, with Repeat, on crafted TCP packets of a pod's
// connection. The programs take the same path as for a packet on the pod's
// veth (endpoint lookup, conntrack, policy, counters) and reserve and submit
// the same records, so the agent cannot tell them from traffic; the
// generator costs a fraction of a core in the kernel instead of a TCP
// stack's worth.
//
// Every run emits exactly one event: a SYN from the client (a new
// connection, or a SYN flag change on a known one) or an RST from the
// server (a flag change in reply), by the datapath's own reporting rules.
// The server must be on another node: to a pod of the client's node, the
// from-pod program also runs the server's to-pod half (local delivery),
// two events a run.
type eventSource struct {
	netns        string // node netns, where the veth's ifindex resolves
	from, to     *ebpf.Program
	ctx          []byte // struct __sk_buff with ifindex set
	client, serv labPod
	port         uint16
	srcMAC       net.HardwareAddr
	dstMAC       net.HardwareAddr
}

// newEventSource opens client's node's pinned tcx programs. Close it.
func newEventSource(client, server labPod, port int) (*eventSource, error) {
	progs := filepath.Join(client.BPFRoot, "progs")
	from, err := ebpf.LoadPinnedProgram(filepath.Join(progs, datapath.PinTCXIngress), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("event source: %w", err)
	}
	to, err := ebpf.LoadPinnedProgram(filepath.Join(progs, datapath.PinTCXEgress), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		from.Close()
		return nil, fmt.Errorf("event source: %w", err)
	}
	s := &eventSource{netns: client.Node.NetNSPath(), from: from, to: to, client: client, serv: server, port: uint16(port)}
	err = inNetns(s.netns, func() error {
		ifc, err := net.InterfaceByName(client.HostIf)
		if err != nil {
			return err
		}
		s.dstMAC = ifc.HardwareAddr
		s.ctx, err = skbContext(uint32(ifc.Index))
		return err
	})
	if err == nil {
		err = inNetns(client.Netns, func() error {
			ifc, err := net.InterfaceByName("eth0")
			if err == nil {
				s.srcMAC = ifc.HardwareAddr
			}
			return err
		})
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("event source: %w", err)
	}
	return s, nil
}

func (s *eventSource) Close() {
	s.from.Close()
	s.to.Close()
}

// skbContext is a struct __sk_buff, cut after its ifindex field, with
// ifindex set: the test run then gives the packet that device (the kernel
// accepts a shorter context and zero-fills the rest). The field's offset is
// read from the running kernel's BTF.
func skbContext(ifindex uint32) ([]byte, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel btf: %w", err)
	}
	var st *btf.Struct
	if err := spec.TypeByName("__sk_buff", &st); err != nil {
		return nil, fmt.Errorf("kernel btf: %w", err)
	}
	for _, m := range st.Members {
		if m.Name == "ifindex" {
			off := m.Offset.Bytes()
			b := make([]byte, off+4)
			binary.NativeEndian.PutUint32(b[off:], ifindex)
			return b, nil
		}
	}
	return nil, errors.New("kernel btf: __sk_buff has no ifindex")
}

// packet is an Ethernet/IPv4/TCP segment without payload.
func packet(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	b := make([]byte, 14+20+20)
	copy(b[0:6], dstMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[6] = 0x40 // DF
	ip[8] = 64
	ip[9] = 6
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:16], s4[:])
	copy(ip[16:20], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip))
	tcp := b[34:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	binary.BigEndian.PutUint32(tcp[4:], 1)
	tcp[12] = 5 << 4
	tcp[13] = flags
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	return b
}

func ipChecksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

const (
	tcpFIN = 0x01
	tcpSYN = 0x02
	tcpRST = 0x04
	tcpACK = 0x10
)

// srcBatch is how many events one test run writes: at 200k/s a batch is
// 5 ms of events, a fraction of the 16 MiB ring (~58k records).
const srcBatch = 1000

// drive writes events at rate per second for d and returns how many it
// wrote (each test run of Repeat n writes n records, or counts them lost).
// Batches alternate a client SYN and a server RST on one of 4096 source
// ports, so the agent sees many connections opening and resetting.
func (s *eventSource) drive(ctx context.Context, rate float64, d time.Duration) (uint64, error) {
	src, err := netip.ParseAddr(s.client.IP)
	if err != nil {
		return 0, fmt.Errorf("event source: %w", err)
	}
	dst, err := netip.ParseAddr(s.serv.IP)
	if err != nil {
		return 0, fmt.Errorf("event source: %w", err)
	}
	const ports = 4096
	syn := make([][]byte, ports)
	rst := make([][]byte, ports)
	for i := range ports {
		sport := uint16(20000 + i)
		syn[i] = packet(s.srcMAC, s.dstMAC, src, dst, sport, s.port, tcpSYN)
		rst[i] = packet(s.dstMAC, s.srcMAC, dst, src, s.port, sport, tcpRST|tcpACK)
	}
	var sent uint64
	err = inNetns(s.netns, func() error {
		start := time.Now()
		end := start.Add(d)
		batch := 0
		for ctx.Err() == nil {
			now := time.Now()
			if !now.Before(end) {
				return nil
			}
			due := uint64(rate * now.Sub(start).Seconds())
			if due <= sent {
				time.Sleep(time.Millisecond)
				continue
			}
			n := min(due-sent, srcBatch)
			i := (batch / 2) % ports
			opts := ebpf.RunOptions{Data: syn[i], Context: s.ctx, Repeat: uint32(n)}
			prog := s.from
			if batch%2 == 1 {
				opts.Data, prog = rst[i], s.to
			}
			if _, err := prog.Run(&opts); err != nil {
				return fmt.Errorf("event source: test run: %w", err)
			}
			sent += n
			batch++
		}
		return nil
	})
	return sent, err
}
