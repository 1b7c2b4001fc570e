package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The record's numbers (message type, observation point, verdict, drop
// reason, direction, match type) are the contract package's: Cilium's
// monitor numbering and Hubble's flow enums. The flags below are loupe's
// own. TestHeaderMatchesContract ties every #define of bpf/event.h to these
// constants, and the offsets below to the compiled object's BTF.
const (
	FlagReply    uint8 = 0x01 // conntrack: the packet goes against the connection's first direction
	FlagCTNew    uint8 = 0x02 // first packet of a connection
	FlagPeriodic uint8 = 0x04 // periodic record of a long-lived connection
	FlagXDP      uint8 = 0x08 // emitted by the XDP program
	// FlagKernel marks a kernel drop (bpf/kdrop.c): KernelReason, NetnsIno
	// and Location are set, EndpointID and the identities are not, and the
	// addresses may be missing (Family 0) when the packet had no readable
	// IP header.
	FlagKernel uint8 = 0x10
	// FlagTCPRetransmit marks a TCP retransmission (bpf/tcp.c): NetnsIno
	// is set, PacketsFwd and BytesFwd are the segments and bytes sent
	// again, PacketsRev the connection's retransmitted segments so far
	// (tcp_sock.total_retrans), TCPFlags the segment's flags. Src is the
	// socket's own end.
	FlagTCPRetransmit uint8 = 0x20
	// FlagTCPReset marks a TCP reset (bpf/tcp.c): Direction is
	// contract.DirectionEgress when the socket's stack sent it (KernelReason
	// is then its enum sk_rst_reason value) and DirectionIngress when a
	// socket received it; Src is the end that sent it. NetnsIno is set.
	FlagTCPReset uint8 = 0x40
	// flagsTracepoint are the records of tracepoints rather than packet
	// programs: they may come without addresses.
	flagsTracepoint = FlagKernel | FlagTCPRetransmit | FlagTCPReset

	// EventDataLen is the most packet bytes a record carries.
	EventDataLen = 128
	// EventSize is sizeof(struct loupe_event).
	EventSize = 280
)

// Offsets of struct loupe_event's fields (datapath/bpf/event.h).
const (
	offTimestamp   = 0
	offType        = 8
	offObsPoint    = 9
	offVerdict     = 10
	offDropReason  = 11
	offFamily      = 12
	offProto       = 13
	offTCPFlags    = 14
	offFlags       = 15
	offIfindex     = 16
	offEndpointID  = 20
	offSrcIdentity = 24
	offDstIdentity = 28
	offSaddr       = 32
	offDaddr       = 48
	offSport       = 64
	offDport       = 66
	offICMPType    = 68
	offICMPCode    = 69
	offMatchType   = 70
	offDirection   = 71
	offPolicyID    = 72
	offPacketLen   = 76
	offCapLen      = 80
	offKernReason  = 84
	offPacketsFwd  = 88
	offBytesFwd    = 96
	offPacketsRev  = 104
	offBytesRev    = 112
	offData        = 120
	offNetnsIno    = 248
	offLocation    = 256
	offHandshake   = 264
	offServiceID   = 272
)

// Event is one decoded datapath record. Data aliases the buffer it was
// decoded from, so that decoding does not allocate.
type Event struct {
	TimestampNS uint64 // CLOCK_BOOTTIME
	Type        uint8  // contract.MessageType*
	ObsPoint    uint8  // contract.Trace*
	Verdict     uint8  // contract.Verdict*
	DropReason  uint8  // contract.Drop*
	Family      uint8  // 4 or 6
	Proto       uint8  // IPPROTO_*
	TCPFlags    uint8
	Flags       uint8 // Flag*
	Ifindex     uint32
	EndpointID  uint32
	SrcIdentity uint32
	DstIdentity uint32
	Src, Dst    netip.Addr
	SrcPort     uint16
	DstPort     uint16
	ICMPType    uint8
	ICMPCode    uint8
	MatchType   uint8 // contract.PolicyMatch*
	Direction   uint8 // contract.Direction*
	PolicyID    uint32
	PacketLen   uint32
	PacketsFwd  uint64
	BytesFwd    uint64
	PacketsRev  uint64
	BytesRev    uint64
	Data        []byte // the first bytes of the packet, from the Ethernet header
	// Kernel drops (FlagKernel) only.
	KernelReason uint32 // the running kernel's enum skb_drop_reason value
	NetnsIno     uint64 // inode of the network namespace of the drop
	Location     uint64 // kernel address where the packet was freed
	// HandshakeNS is the connection's TCP handshake time as its conntrack
	// entry holds it (bpf/conntrack.h ct_handshake), 0 when not timed.
	HandshakeNS uint64
	// ServiceID is the Service frontend (ClusterIP, port, protocol) the
	// datapath translated the packet from, or the reply to; 0 for none
	// (bpf/service.h). The agent's service table names it.
	ServiceID uint32
}

// ErrShortEvent is returned for records shorter than EventSize.
var ErrShortEvent = errors.New("event shorter than header")

// DecodeEvent parses one ring-buffer record into ev. It never panics on
// hostile input: every length is checked against the buffer.
func DecodeEvent(b []byte, ev *Event) error {
	if len(b) < EventSize {
		return fmt.Errorf("%w: %d < %d bytes", ErrShortEvent, len(b), EventSize)
	}
	le := binary.LittleEndian
	ev.TimestampNS = le.Uint64(b[offTimestamp:])
	ev.Type, ev.ObsPoint, ev.Verdict, ev.DropReason = b[offType], b[offObsPoint], b[offVerdict], b[offDropReason]
	ev.Family, ev.Proto, ev.TCPFlags, ev.Flags = b[offFamily], b[offProto], b[offTCPFlags], b[offFlags]
	ev.Ifindex = le.Uint32(b[offIfindex:])
	ev.EndpointID = le.Uint32(b[offEndpointID:])
	ev.SrcIdentity = le.Uint32(b[offSrcIdentity:])
	ev.DstIdentity = le.Uint32(b[offDstIdentity:])
	switch ev.Family {
	case 4:
		ev.Src = netip.AddrFrom4([4]byte(b[offSaddr : offSaddr+4]))
		ev.Dst = netip.AddrFrom4([4]byte(b[offDaddr : offDaddr+4]))
	case 6:
		ev.Src = netip.AddrFrom16([16]byte(b[offSaddr : offSaddr+16]))
		ev.Dst = netip.AddrFrom16([16]byte(b[offDaddr : offDaddr+16]))
		if ev.Flags&(FlagTCPRetransmit|FlagTCPReset) != 0 && ev.Src.Is4In6() && ev.Dst.Is4In6() {
			// A dual-stack socket talking IPv4: name it as IPv4.
			ev.Src, ev.Dst, ev.Family = ev.Src.Unmap(), ev.Dst.Unmap(), 4
		}
	case 0:
		// Only a kernel drop may come without addresses: its packet's
		// headers were not readable.
		if ev.Flags&flagsTracepoint == 0 {
			return fmt.Errorf("event: unknown address family %d", ev.Family)
		}
		ev.Src, ev.Dst = netip.Addr{}, netip.Addr{}
	default:
		return fmt.Errorf("event: unknown address family %d", ev.Family)
	}
	ev.SrcPort = le.Uint16(b[offSport:])
	ev.DstPort = le.Uint16(b[offDport:])
	ev.ICMPType, ev.ICMPCode, ev.MatchType, ev.Direction = b[offICMPType], b[offICMPCode], b[offMatchType], b[offDirection]
	ev.PolicyID = le.Uint32(b[offPolicyID:])
	ev.PacketLen = le.Uint32(b[offPacketLen:])
	capLen := le.Uint32(b[offCapLen:])
	ev.KernelReason = le.Uint32(b[offKernReason:])
	ev.NetnsIno = le.Uint64(b[offNetnsIno:])
	ev.Location = le.Uint64(b[offLocation:])
	ev.HandshakeNS = le.Uint64(b[offHandshake:])
	ev.ServiceID = le.Uint32(b[offServiceID:])
	ev.PacketsFwd = le.Uint64(b[offPacketsFwd:])
	ev.BytesFwd = le.Uint64(b[offBytesFwd:])
	ev.PacketsRev = le.Uint64(b[offPacketsRev:])
	ev.BytesRev = le.Uint64(b[offBytesRev:])
	if capLen > EventDataLen {
		return fmt.Errorf("event: capture length %d exceeds %d", capLen, EventDataLen)
	}
	// A full slice expression: an append to Data must not write into the
	// ring buffer's memory past the record.
	ev.Data = b[offData : offData+capLen : offData+capLen]
	return nil
}

// EncodeEvent lays ev out as the datapath writes it, the inverse of
// DecodeEvent: tests, benchmarks and fuzzers build records with it. The
// family comes from ev.Src (ev.Family is ignored); Data longer than
// EventDataLen is an error, as an address of another family in Dst. A
// kernel drop (FlagKernel) may have neither address.
func EncodeEvent(ev *Event) ([]byte, error) {
	noAddrs := !ev.Src.IsValid() && !ev.Dst.IsValid() && ev.Flags&flagsTracepoint != 0
	if !noAddrs && (!ev.Src.IsValid() || ev.Src.Is4() != ev.Dst.Is4()) {
		return nil, fmt.Errorf("encode event: addresses %s and %s are not of one family", ev.Src, ev.Dst)
	}
	if len(ev.Data) > EventDataLen {
		return nil, fmt.Errorf("encode event: %d data bytes exceed %d", len(ev.Data), EventDataLen)
	}
	b := make([]byte, EventSize)
	le := binary.LittleEndian
	le.PutUint64(b[offTimestamp:], ev.TimestampNS)
	b[offType], b[offObsPoint], b[offVerdict], b[offDropReason] = ev.Type, ev.ObsPoint, ev.Verdict, ev.DropReason
	b[offFamily], b[offProto], b[offTCPFlags], b[offFlags] = 6, ev.Proto, ev.TCPFlags, ev.Flags
	switch {
	case noAddrs:
		b[offFamily] = 0
	case ev.Src.Is4():
		b[offFamily] = 4
	}
	le.PutUint32(b[offIfindex:], ev.Ifindex)
	le.PutUint32(b[offEndpointID:], ev.EndpointID)
	le.PutUint32(b[offSrcIdentity:], ev.SrcIdentity)
	le.PutUint32(b[offDstIdentity:], ev.DstIdentity)
	if !noAddrs {
		copy(b[offSaddr:offSaddr+16], ev.Src.AsSlice())
		copy(b[offDaddr:offDaddr+16], ev.Dst.AsSlice())
	}
	le.PutUint16(b[offSport:], ev.SrcPort)
	le.PutUint16(b[offDport:], ev.DstPort)
	b[offICMPType], b[offICMPCode], b[offMatchType], b[offDirection] = ev.ICMPType, ev.ICMPCode, ev.MatchType, ev.Direction
	le.PutUint32(b[offPolicyID:], ev.PolicyID)
	le.PutUint32(b[offPacketLen:], ev.PacketLen)
	le.PutUint32(b[offCapLen:], uint32(len(ev.Data)))
	le.PutUint64(b[offPacketsFwd:], ev.PacketsFwd)
	le.PutUint64(b[offBytesFwd:], ev.BytesFwd)
	le.PutUint64(b[offPacketsRev:], ev.PacketsRev)
	le.PutUint64(b[offBytesRev:], ev.BytesRev)
	copy(b[offData:], ev.Data)
	le.PutUint32(b[offKernReason:], ev.KernelReason)
	le.PutUint64(b[offNetnsIno:], ev.NetnsIno)
	le.PutUint64(b[offLocation:], ev.Location)
	le.PutUint64(b[offHandshake:], ev.HandshakeNS)
	le.PutUint32(b[offServiceID:], ev.ServiceID)
	return b, nil
}

// MustEncodeEvent is EncodeEvent for records built by code, which panics
// on a bad record instead of returning the error.
func MustEncodeEvent(ev *Event) []byte {
	b, err := EncodeEvent(ev)
	if err != nil {
		panic(err)
	}
	return b
}
