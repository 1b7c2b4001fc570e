package datapath

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
)

// L7 capture modes (l7_mode bits and record kinds of bpf/l7.h).
const (
	L7DNS  uint8 = 1
	L7HTTP uint8 = 2

	// L7DataLen is the most payload bytes an L7 record carries: 512, the
	// classic DNS-over-UDP message limit, so typical DNS messages are whole.
	L7DataLen = 512
	// L7RecordSize is sizeof(struct loupe_l7_record).
	L7RecordSize = 592
	// L7MaxDNSPorts is how many DNS ports the datapath compares against.
	L7MaxDNSPorts = 4
	// DefaultHTTPCaptureLen is how many bytes of an HTTP message are copied.
	DefaultHTTPCaptureLen = 256
	// DefaultL7EventsPerSecond limits L7 records for the node.
	DefaultL7EventsPerSecond = 20000
)

// DefaultDNSPorts are the ports whose UDP and TCP payloads are DNS.
var DefaultDNSPorts = []uint16{53, 5353}

// ParseL7Mode reads --l7: "dns,http", "dns", "http" or "off".
func ParseL7Mode(s string) (uint8, error) {
	if s == "off" {
		return 0, nil
	}
	var m uint8
	for part := range strings.SplitSeq(s, ",") {
		switch strings.TrimSpace(part) {
		case "dns":
			m |= L7DNS
		case "http":
			m |= L7HTTP
		default:
			return 0, fmt.Errorf("l7: unknown protocol %q (want dns, http or off)", part)
		}
	}
	return m, nil
}

// Offsets of struct loupe_l7_record's fields (bpf/l7.h).
const (
	l7OffTimestamp   = 0
	l7OffIfindex     = 8
	l7OffEndpointID  = 12
	l7OffSrcIdentity = 16
	l7OffDstIdentity = 20
	l7OffSaddr       = 24
	l7OffDaddr       = 40
	l7OffSport       = 56
	l7OffDport       = 58
	l7OffFamily      = 60
	l7OffProto       = 61
	l7OffKind        = 62
	l7OffDirection   = 63
	l7OffTCPFlags    = 64
	l7OffPayloadLen  = 68
	l7OffCapLen      = 72
	l7OffData        = 80
)

// L7Record is one decoded L7 record: the first bytes of a DNS or HTTP
// message's packet. Data aliases the decoded buffer.
type L7Record struct {
	TimestampNS uint64 // CLOCK_BOOTTIME
	Ifindex     uint32
	EndpointID  uint32
	SrcIdentity uint32
	DstIdentity uint32
	Src, Dst    netip.Addr
	SrcPort     uint16
	DstPort     uint16
	Proto       uint8 // IPPROTO_TCP or IPPROTO_UDP
	Kind        uint8 // L7DNS or L7HTTP
	Direction   uint8 // contract.Direction*, seen from the endpoint
	TCPFlags    uint8
	PayloadLen  uint32 // payload bytes of the packet; Data may hold fewer
	Data        []byte
}

// DecodeL7Record parses one l7_events record. It never panics on hostile
// input.
func DecodeL7Record(b []byte, r *L7Record) error {
	if len(b) < L7RecordSize {
		return fmt.Errorf("%w: l7 record of %d < %d bytes", ErrShortEvent, len(b), L7RecordSize)
	}
	le := binary.LittleEndian
	r.TimestampNS = le.Uint64(b[l7OffTimestamp:])
	r.Ifindex = le.Uint32(b[l7OffIfindex:])
	r.EndpointID = le.Uint32(b[l7OffEndpointID:])
	r.SrcIdentity = le.Uint32(b[l7OffSrcIdentity:])
	r.DstIdentity = le.Uint32(b[l7OffDstIdentity:])
	switch b[l7OffFamily] {
	case 4:
		r.Src = netip.AddrFrom4([4]byte(b[l7OffSaddr : l7OffSaddr+4]))
		r.Dst = netip.AddrFrom4([4]byte(b[l7OffDaddr : l7OffDaddr+4]))
	case 6:
		r.Src = netip.AddrFrom16([16]byte(b[l7OffSaddr : l7OffSaddr+16]))
		r.Dst = netip.AddrFrom16([16]byte(b[l7OffDaddr : l7OffDaddr+16]))
	default:
		return fmt.Errorf("l7 record: unknown address family %d", b[l7OffFamily])
	}
	r.SrcPort = le.Uint16(b[l7OffSport:])
	r.DstPort = le.Uint16(b[l7OffDport:])
	r.Proto, r.Kind, r.Direction, r.TCPFlags = b[l7OffProto], b[l7OffKind], b[l7OffDirection], b[l7OffTCPFlags]
	if r.Proto != 6 && r.Proto != 17 {
		return fmt.Errorf("l7 record: protocol %d", r.Proto)
	}
	if r.Kind != L7DNS && r.Kind != L7HTTP {
		return fmt.Errorf("l7 record: unknown kind %d", r.Kind)
	}
	r.PayloadLen = le.Uint32(b[l7OffPayloadLen:])
	capLen := le.Uint32(b[l7OffCapLen:])
	if capLen > L7DataLen || capLen > r.PayloadLen {
		return fmt.Errorf("l7 record: capture length %d (payload %d, at most %d)", capLen, r.PayloadLen, L7DataLen)
	}
	r.Data = b[l7OffData : l7OffData+capLen : l7OffData+capLen]
	return nil
}

// EncodeL7Record lays r out as the datapath writes it (tests, fuzz seeds).
func EncodeL7Record(r *L7Record) ([]byte, error) {
	if !r.Src.IsValid() || r.Src.Is4() != r.Dst.Is4() {
		return nil, fmt.Errorf("encode l7 record: addresses %s and %s are not of one family", r.Src, r.Dst)
	}
	if len(r.Data) > L7DataLen || uint32(len(r.Data)) > r.PayloadLen {
		return nil, fmt.Errorf("encode l7 record: %d data bytes (payload %d, at most %d)", len(r.Data), r.PayloadLen, L7DataLen)
	}
	b := make([]byte, L7RecordSize)
	le := binary.LittleEndian
	le.PutUint64(b[l7OffTimestamp:], r.TimestampNS)
	le.PutUint32(b[l7OffIfindex:], r.Ifindex)
	le.PutUint32(b[l7OffEndpointID:], r.EndpointID)
	le.PutUint32(b[l7OffSrcIdentity:], r.SrcIdentity)
	le.PutUint32(b[l7OffDstIdentity:], r.DstIdentity)
	b[l7OffFamily] = 6
	if r.Src.Is4() {
		b[l7OffFamily] = 4
	}
	copy(b[l7OffSaddr:l7OffSaddr+16], r.Src.AsSlice())
	copy(b[l7OffDaddr:l7OffDaddr+16], r.Dst.AsSlice())
	le.PutUint16(b[l7OffSport:], r.SrcPort)
	le.PutUint16(b[l7OffDport:], r.DstPort)
	b[l7OffProto], b[l7OffKind], b[l7OffDirection], b[l7OffTCPFlags] = r.Proto, r.Kind, r.Direction, r.TCPFlags
	le.PutUint32(b[l7OffPayloadLen:], r.PayloadLen)
	le.PutUint32(b[l7OffCapLen:], uint32(len(r.Data)))
	copy(b[l7OffData:], r.Data)
	return b, nil
}

// l7_stats slots (L7_STAT_* in bpf/l7.h).
const (
	l7StatRingbufFull = 0
	l7StatLimited     = 1
)

// L7Stats tells how complete the L7 record stream is.
type L7Stats struct {
	Read    uint64 // records handed to ReadL7 sinks
	Lost    uint64 // records the datapath could not write: l7_events full
	Limited uint64 // records held back by the L7 rate limit
}

// L7Stats returns the reader's count and the datapath's L7 loss counts.
func (d *Datapath) L7Stats() (L7Stats, error) {
	s := L7Stats{Read: d.l7Read.Load()}
	for slot, dst := range map[uint32]*uint64{l7StatRingbufFull: &s.Lost, l7StatLimited: &s.Limited} {
		var vals []uint64
		if err := d.objs.L7Stats.Lookup(slot, &vals); err != nil {
			return s, fmt.Errorf("l7 stats: %w", err)
		}
		for _, v := range vals {
			*dst += v
		}
	}
	return s, nil
}

// L7CaughtUp is EventsCaughtUp for the l7_events ring (0 before ReadL7 runs).
func (d *Datapath) L7CaughtUp() int64 { return d.l7CaughtUp.Load() }

// ReadL7 hands every l7_events record to sink until ctx is done, then
// returns nil. raw is only valid during the call. Only one reader at a time.
func (d *Datapath) ReadL7(ctx context.Context, sink func(raw []byte)) error {
	return readRingPolled(ctx, d.objs.L7Events, &d.l7CaughtUp, "read l7 records", func(raw []byte) {
		d.l7Read.Add(1)
		sink(raw)
	})
}
