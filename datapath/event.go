package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Event types, observation points and flags mirror datapath/bpf/event.h,
// which follows Cilium's monitor numbering.
const (
	EventDrop          uint8 = 1
	EventTrace         uint8 = 4
	EventPolicyVerdict uint8 = 9

	ObsToEndpoint   uint8 = 0 // TCX egress on the host veth: to the pod
	ObsFromEndpoint uint8 = 5 // XDP / TCX ingress on the host veth: from the pod

	VerdictForwarded uint8 = 1
	VerdictDropped   uint8 = 2

	DropInvalidSourceIP uint8 = 132
	DropPolicyDenied    uint8 = 133
	DropInvalidPacket   uint8 = 134

	DirIngress uint8 = 1 // to the pod
	DirEgress  uint8 = 2 // from the pod

	FlagReply    uint8 = 0x01
	FlagCTNew    uint8 = 0x02
	FlagPeriodic uint8 = 0x04
	FlagXDP      uint8 = 0x08

	EventDataLen = 128
	// EventSize is sizeof(struct loupe_event).
	EventSize = 248
)

// Event is one decoded datapath record. Data aliases the buffer it was
// decoded from, so that decoding does not allocate.
type Event struct {
	TimestampNS uint64 // CLOCK_BOOTTIME
	Type        uint8
	ObsPoint    uint8
	Verdict     uint8
	DropReason  uint8
	Family      uint8
	Proto       uint8
	TCPFlags    uint8
	Flags       uint8
	Ifindex     uint32
	EndpointID  uint32
	SrcIdentity uint32
	DstIdentity uint32
	Src, Dst    netip.Addr
	SrcPort     uint16
	DstPort     uint16
	ICMPType    uint8
	ICMPCode    uint8
	MatchType   uint8
	Direction   uint8
	PolicyID    uint32
	PacketLen   uint32
	PacketsFwd  uint64
	BytesFwd    uint64
	PacketsRev  uint64
	BytesRev    uint64
	Data        []byte // the first bytes of the packet, from the Ethernet header
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
	ev.TimestampNS = le.Uint64(b[0:])
	ev.Type, ev.ObsPoint, ev.Verdict, ev.DropReason = b[8], b[9], b[10], b[11]
	ev.Family, ev.Proto, ev.TCPFlags, ev.Flags = b[12], b[13], b[14], b[15]
	ev.Ifindex = le.Uint32(b[16:])
	ev.EndpointID = le.Uint32(b[20:])
	ev.SrcIdentity = le.Uint32(b[24:])
	ev.DstIdentity = le.Uint32(b[28:])
	switch ev.Family {
	case 4:
		ev.Src = netip.AddrFrom4([4]byte(b[32:36]))
		ev.Dst = netip.AddrFrom4([4]byte(b[48:52]))
	case 6:
		ev.Src = netip.AddrFrom16([16]byte(b[32:48]))
		ev.Dst = netip.AddrFrom16([16]byte(b[48:64]))
	default:
		return fmt.Errorf("event: unknown address family %d", ev.Family)
	}
	ev.SrcPort = le.Uint16(b[64:])
	ev.DstPort = le.Uint16(b[66:])
	ev.ICMPType, ev.ICMPCode, ev.MatchType, ev.Direction = b[68], b[69], b[70], b[71]
	ev.PolicyID = le.Uint32(b[72:])
	ev.PacketLen = le.Uint32(b[76:])
	capLen := le.Uint32(b[80:])
	// b[84:88] is padding.
	ev.PacketsFwd = le.Uint64(b[88:])
	ev.BytesFwd = le.Uint64(b[96:])
	ev.PacketsRev = le.Uint64(b[104:])
	ev.BytesRev = le.Uint64(b[112:])
	if capLen > EventDataLen {
		return fmt.Errorf("event: capture length %d exceeds %d", capLen, EventDataLen)
	}
	ev.Data = b[120 : 120+capLen]
	return nil
}
