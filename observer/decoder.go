package observer

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
	"unsafe"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
	"github.com/loupe-project/loupe/observer/conndelta"
)

// PolicyResolver maps the rule id the datapath reports to the policies it
// stands for. The policy package provides one; nil means flows carry no
// allowed_by / denied_by.
type PolicyResolver interface {
	ResolvePolicy(ruleID uint32) []*flowpb.Policy
}

// ErrUnknownEventType is returned for records of a type the observer does
// not turn into flows.
var ErrUnknownEventType = errors.New("unknown event type")

// Decoder turns datapath records into enriched flows. It is not safe for
// concurrent use: the Observer serializes calls.
type Decoder struct {
	nodeName   string
	bootOffset int64 // wall-clock ns minus CLOCK_BOOTTIME ns, taken at start
	index      *atomic.Pointer[enrichIndex]
	policy     PolicyResolver
	linkName   func(ifindex uint32) string
	kernel     KernelEvents // nil: kernel records are not reported
	names      *fqdnCache   // nil: flows carry no source/destination names
	// serviceByID names an event's ServiceID (service.go); nil: none.
	serviceByID func(id uint32) (namespace, name string, ok bool)
	svcByID     map[uint32]*flowpb.Service

	// conn holds the connection totals the last Decode put on its flow
	// (connOK), so the metrics need not read them back from the Struct.
	conn   conndelta.Totals
	connOK bool

	// attributed is how the last kernel drop Decode returned was tied to
	// a pod (Attributed*), kreason its reason's name.
	attributed, kreason string

	// src and lastSnap are set for standalone decoders (NewDecoder).
	src      metadata.Source
	lastSnap *metadata.Snapshot

	ev      datapath.Event
	rng     *mrand.ChaCha8
	blocks  slab[flowBlock]
	tcps    slab[tcpBlock]
	bytes   byteSlab // the connection extensions' values
	ipStr   map[netip.Addr]string
	ifNames map[uint32]string
	nonPod  map[nonPodKey]*flowpb.Endpoint
}

type nonPodKey struct {
	id, identity uint32
	kind         uint8
}

// Caches are cleared when they reach this size, so hostile traffic (a scan
// of the whole address space) cannot grow them without bound.
const maxDecoderCache = 8192

func newDecoder(nodeName string, index *atomic.Pointer[enrichIndex], policy PolicyResolver, linkName func(uint32) string) *Decoder {
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	d := &Decoder{
		nodeName:   nodeName,
		bootOffset: BootOffset(),
		index:      index,
		policy:     policy,
		linkName:   linkName,
		rng:        mrand.NewChaCha8(seed),
		ipStr:      make(map[netip.Addr]string),
		ifNames:    make(map[uint32]string),
		nonPod:     make(map[nonPodKey]*flowpb.Endpoint),
	}
	if d.linkName == nil {
		d.linkName = systemLinkName
	}
	return d
}

// BootOffset returns wall-clock time minus CLOCK_BOOTTIME, in ns: add it to
// a datapath timestamp to get Unix time.
func BootOffset() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Now().UnixNano() - ts.Nano()
}

func systemLinkName(ifindex uint32) string {
	if ifi, err := net.InterfaceByIndex(int(ifindex)); err == nil {
		return ifi.Name
	}
	return ""
}

// slabSize is how many blocks of a kind one allocation makes. The ring
// drops flows in the order they came, so a slab's blocks leave it
// together: one allocation for 64 flows instead of 64, at the price of a
// slab outliving its other flows while something holds one of them (a
// follower for as long as it sends one; see FlowKeeper for sinks).
const slabSize = 64

// slab hands out zeroed Ts from arrays of size (0: slabSize).
type slab[T any] struct {
	free []T
	size int
}

func (s *slab[T]) next() *T {
	if len(s.free) == 0 {
		s.free = make([]T, cmp.Or(s.size, slabSize))
	}
	t := &s.free[0]
	s.free = s.free[1:]
	return t
}

// byteSlab hands out byte slices carved from shared arrays, for the
// value every forwarded flow of a connection carries (its connection
// extension), so that decoding it allocates from slabs like the rest of
// the flow. Like slab's blocks, they leave with the flows, in order.
type byteSlab struct {
	free []byte
	size int // of each array; 0: byteSlabSize
}

// byteSlabSize holds about a hundred connection extensions.
const byteSlabSize = 16 << 10

// take returns n bytes (not zeroed), capped so that an append cannot
// reach the next flow's.
func (s *byteSlab) take(n int) []byte {
	size := cmp.Or(s.size, byteSlabSize)
	if n > size/4 {
		return make([]byte, n)
	}
	if len(s.free) < n {
		s.free = make([]byte, size)
	}
	b := s.free[:n:n]
	s.free = s.free[n:]
	return b
}

// flowBlock holds a flow and the messages it always points to, so one
// allocation serves them all. The ring entry lives here too.
type flowBlock struct {
	entry entry
	flow  flowpb.Flow
	time  timestamppb.Timestamp
	ip    flowpb.IP
	l4    flowpb.Layer4
	etype flowpb.CiliumEventType
	iface flowpb.NetworkInterface
	reply wrapperspb.BoolValue
	ext   anypb.Any // the connection extension, when the flow has one
	uuid  [36]byte
}

type tcpBlock struct {
	oneof flowpb.Layer4_TCP
	tcp   flowpb.TCP
	flags flowpb.TCPFlags
}

type udpBlock struct {
	oneof flowpb.Layer4_UDP
	udp   flowpb.UDP
}

type icmp4Block struct {
	oneof flowpb.Layer4_ICMPv4
	icmp  flowpb.ICMPv4
}

type icmp6Block struct {
	oneof flowpb.Layer4_ICMPv6
	icmp  flowpb.ICMPv6
}

type sctpBlock struct {
	oneof flowpb.Layer4_SCTP
	sctp  flowpb.SCTP
}

// Decode parses one ring-buffer record into a new flow. The returned
// entry's flow is never modified afterwards.
func (d *Decoder) Decode(raw []byte) (*entry, error) {
	ev := &d.ev
	if err := datapath.DecodeEvent(raw, ev); err != nil {
		return nil, err
	}
	switch ev.Type {
	case contract.MessageTypeDrop, contract.MessageTypeTrace, contract.MessageTypePolicyVerdict:
	default:
		return nil, fmt.Errorf("%w %d", ErrUnknownEventType, ev.Type)
	}
	// A kernel record is seen by every agent sharing the kernel: decide
	// before building anything whether it is this one's to report.
	tcpKind := tcpEventKind(ev)
	kernel := ev.Flags&datapath.FlagKernel != 0 || tcpKind != ""
	var kep *NetnsEndpoint
	if kernel {
		if d.kernel == nil {
			return nil, ErrNotReported
		}
		report, ep := d.kernel.Netns(ev.NetnsIno)
		if !report || (tcpKind == "" && d.kernel.Function(ev.Location) == pingRcv) {
			return nil, ErrNotReported
		}
		kep = ep
	}
	b := d.blocks.next()
	f := &b.flow
	b.entry.flow = f

	ns := d.bootOffset + int64(ev.TimestampNS)
	b.time.Seconds, b.time.Nanos = ns/1e9, int32(ns%1e9)
	f.Time = &b.time
	d.uuid(&b.uuid)
	f.Uuid = unsafe.String(&b.uuid[0], len(b.uuid))
	f.Type = flowpb.FlowType_L3_L4
	f.NodeName = d.nodeName

	// IP (a kernel drop may have no readable header)
	if ev.Src.IsValid() {
		b.ip.Source = d.addrString(ev.Src)
		b.ip.Destination = d.addrString(ev.Dst)
		if ev.Family == 6 {
			b.ip.IpVersion = flowpb.IPVersion_IPv6
		} else {
			b.ip.IpVersion = flowpb.IPVersion_IPv4
		}
		f.IP = &b.ip
	}

	// L4 and summary
	switch ev.Proto {
	case unix.IPPROTO_TCP:
		t := d.tcps.next()
		t.tcp.SourcePort, t.tcp.DestinationPort = uint32(ev.SrcPort), uint32(ev.DstPort)
		fl := ev.TCPFlags
		t.flags = flowpb.TCPFlags{
			FIN: fl&0x01 != 0, SYN: fl&0x02 != 0, RST: fl&0x04 != 0, PSH: fl&0x08 != 0,
			ACK: fl&0x10 != 0, URG: fl&0x20 != 0, ECE: fl&0x40 != 0, CWR: fl&0x80 != 0,
		}
		t.tcp.Flags = &t.flags
		t.oneof.TCP = &t.tcp
		b.l4.Protocol = &t.oneof
		f.L4 = &b.l4
		f.Summary = tcpSummaries[fl]
	case unix.IPPROTO_UDP:
		u := &udpBlock{}
		u.udp.SourcePort, u.udp.DestinationPort = uint32(ev.SrcPort), uint32(ev.DstPort)
		u.oneof.UDP = &u.udp
		b.l4.Protocol = &u.oneof
		f.L4 = &b.l4
		f.Summary = "UDP"
	case unix.IPPROTO_SCTP:
		s := &sctpBlock{}
		s.sctp.SourcePort, s.sctp.DestinationPort = uint32(ev.SrcPort), uint32(ev.DstPort)
		s.oneof.SCTP = &s.sctp
		b.l4.Protocol = &s.oneof
		f.L4 = &b.l4
		f.Summary = "SCTP"
	case unix.IPPROTO_ICMP:
		i := &icmp4Block{}
		i.icmp.Type, i.icmp.Code = uint32(ev.ICMPType), uint32(ev.ICMPCode)
		i.oneof.ICMPv4 = &i.icmp
		b.l4.Protocol = &i.oneof
		f.L4 = &b.l4
		f.Summary = icmpSummary(false, ev.ICMPType, ev.ICMPCode)
	case unix.IPPROTO_ICMPV6:
		i := &icmp6Block{}
		i.icmp.Type, i.icmp.Code = uint32(ev.ICMPType), uint32(ev.ICMPCode)
		i.oneof.ICMPv6 = &i.icmp
		b.l4.Protocol = &i.oneof
		f.L4 = &b.l4
		f.Summary = icmpSummary(true, ev.ICMPType, ev.ICMPCode)
	default:
		switch ev.Family {
		case 6:
			f.Summary = "IPv6"
		case 4:
			f.Summary = "IPv4"
		default:
			f.Summary = "no IP header"
		}
	}
	if tcpKind != "" {
		d.attributed = d.tcpEvent(b, ev, kep, tcpKind)
		if d.attributed == AttributedNone {
			// The node's own connections (the agent's, the relay's): no
			// pod's health, and reporting them would feed on itself.
			return nil, ErrNotReported
		}
		return &b.entry, nil
	}
	if kernel {
		d.connOK = false
		d.attributed = d.kernelDrop(b, ev, kep)
		return &b.entry, nil
	}

	// Event type, verdict, direction
	reply := ev.Flags&datapath.FlagReply != 0
	packetEgress := ev.Direction == contract.DirectionEgress
	connDir := flowpb.TrafficDirection(ev.Direction)
	if ev.Direction == contract.DirectionIngress || ev.Direction == contract.DirectionEgress {
		// Hubble's traffic_direction is the connection's: a reply leaving
		// the pod belongs to an ingress connection.
		if ev.Type != contract.MessageTypeDrop && reply {
			if packetEgress {
				connDir = flowpb.TrafficDirection_INGRESS
			} else {
				connDir = flowpb.TrafficDirection_EGRESS
			}
		}
	}
	f.TrafficDirection = connDir
	b.etype.Type = int32(ev.Type)
	f.EventType = &b.etype
	switch ev.Type {
	case contract.MessageTypeDrop:
		f.Verdict = flowpb.Verdict_DROPPED
		f.DropReason = uint32(ev.DropReason)
		f.DropReasonDesc = flowpb.DropReason(ev.DropReason)
		b.etype.SubType = int32(ev.DropReason)
	case contract.MessageTypeTrace:
		f.Verdict = flowpb.Verdict(ev.Verdict) // the datapath writes Hubble's numbers (contract.Verdict*)
		b.etype.SubType = int32(ev.ObsPoint)
		f.TraceObservationPoint = contract.TraceObservationPoint(ev.ObsPoint)
		b.reply.Value = reply
		f.IsReply, f.Reply = &b.reply, reply
	case contract.MessageTypePolicyVerdict:
		f.Verdict = flowpb.Verdict(ev.Verdict) // the datapath writes Hubble's numbers (contract.Verdict*)
		if f.Verdict == flowpb.Verdict_DROPPED {
			f.DropReason = uint32(ev.DropReason)
			f.DropReasonDesc = flowpb.DropReason(ev.DropReason)
		}
		b.reply.Value = reply
		f.IsReply, f.Reply = &b.reply, reply
		f.PolicyMatchType = uint32(ev.MatchType)
	}
	if ev.Ifindex != 0 {
		b.iface.Index = ev.Ifindex
		b.iface.Name = d.ifName(ev.Ifindex)
		f.Interface = &b.iface
	}

	// Endpoints and services, from the current metadata.
	ix := d.index.Load()
	var srcID, dstID uint32
	if packetEgress {
		srcID = ev.EndpointID
	} else {
		dstID = ev.EndpointID
	}
	f.Source = d.endpoint(ix, ev.Src, srcID, ev.SrcIdentity)
	f.Destination = d.endpoint(ix, ev.Dst, dstID, ev.DstIdentity)
	if len(ix.services) > 0 && ev.Proto != unix.IPPROTO_ICMP && ev.Proto != unix.IPPROTO_ICMPV6 {
		f.SourceService = ix.services[netip.AddrPortFrom(ev.Src, ev.SrcPort)]
		f.DestinationService = ix.services[netip.AddrPortFrom(ev.Dst, ev.DstPort)]
	}
	if s := d.translatedService(ev.ServiceID); s != nil {
		// Translated before the event: the backend's address is in the
		// packet, the Service only in the record. A reply comes from it.
		if reply {
			f.SourceService = s
		} else {
			f.DestinationService = s
		}
	}

	d.connection(b, ev, connDir)
	if d.names != nil {
		f.DestinationNames = d.names.names(ev.Src, ev.Dst, ev.TimestampNS)
		f.SourceNames = d.names.names(ev.Dst, ev.Src, ev.TimestampNS)
	}

	if d.policy != nil && ev.PolicyID != 0 {
		if pols := d.policy.ResolvePolicy(ev.PolicyID); len(pols) > 0 {
			egress := connDir == flowpb.TrafficDirection_EGRESS
			switch {
			case f.Verdict == flowpb.Verdict_DROPPED && egress:
				f.EgressDeniedBy = pols
			case f.Verdict == flowpb.Verdict_DROPPED:
				f.IngressDeniedBy = pols
			case egress:
				f.EgressAllowedBy = pols
			default:
				f.IngressAllowedBy = pols
			}
		}
	}
	return &b.entry, nil
}

const (
	kindWorld uint8 = iota
	kindHost
	kindRemoteNode
	kindOther
)

func (d *Decoder) endpoint(ix *enrichIndex, a netip.Addr, id, identity uint32) *flowpb.Endpoint {
	if p := ix.pods[a]; p != nil {
		return p.endpoint(id, identity)
	}
	kind := kindOther
	if node, ok := ix.nodeIPs[a]; ok {
		kind = kindRemoteNode
		if node == d.nodeName {
			kind = kindHost
		}
	} else if identity == contract.IdentityUnknown || identity == contract.IdentityWorld {
		kind = kindWorld
	}
	key := nonPodKey{id: id, identity: identity, kind: kind}
	if ep := d.nonPod[key]; ep != nil {
		return ep
	}
	ep := &flowpb.Endpoint{ID: id, Identity: identity}
	switch {
	case contract.ReservedLabels(identity) != nil:
		ep.Labels = contract.ReservedLabels(identity)
	case kind == kindHost:
		ep.Labels = contract.ReservedLabels(contract.IdentityHost)
	case kind == kindRemoteNode:
		ep.Labels = contract.ReservedLabels(contract.IdentityRemoteNode)
	case kind == kindWorld:
		ep.Labels = contract.ReservedLabels(contract.IdentityWorld)
	}
	if len(d.nonPod) >= maxDecoderCache {
		clear(d.nonPod)
	}
	d.nonPod[key] = ep
	return ep
}

// flowAddrs are the IP source and destination of f, the flow the last
// Decode made, as addresses: what its IP layer says in strings, zero
// without one.
func (d *Decoder) flowAddrs(f *flowpb.Flow) (src, dst netip.Addr) {
	if f.GetIP() == nil {
		return src, dst
	}
	return d.ev.Src, d.ev.Dst
}

func (d *Decoder) addrString(a netip.Addr) string {
	if s, ok := d.ipStr[a]; ok {
		return s
	}
	s := a.String()
	if len(d.ipStr) >= maxDecoderCache {
		clear(d.ipStr)
	}
	d.ipStr[a] = s
	return s
}

func (d *Decoder) ifName(ifindex uint32) string {
	if s, ok := d.ifNames[ifindex]; ok {
		return s
	}
	s := d.linkName(ifindex)
	if len(d.ifNames) >= maxDecoderCache {
		clear(d.ifNames)
	}
	d.ifNames[ifindex] = s
	return s
}

// forgetLinks drops cached interface names (their pods may be gone and the
// index reused).
func (d *Decoder) forgetLinks() { clear(d.ifNames) }

const hexDigits = "0123456789abcdef"

// uuid writes a random (version 4) UUID; ChaCha8 seeded from crypto/rand
// keeps this off the syscall path.
func (d *Decoder) uuid(out *[36]byte) {
	var u [16]byte
	binary.LittleEndian.PutUint64(u[0:], d.rng.Uint64())
	binary.LittleEndian.PutUint64(u[8:], d.rng.Uint64())
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	j := 0
	for i, c := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hexDigits[c>>4], hexDigits[c&0x0f]
		j += 2
	}
}

// NewDecoder returns a standalone decoder that enriches from src (nil: no
// enrichment); for tools and benchmarks that want flows without a ring or
// server. Not safe for concurrent use.
func NewDecoder(nodeName string, src metadata.Source, policy PolicyResolver, linkName func(uint32) string) *Decoder {
	if src == nil {
		src = metadata.Static{}
	}
	d := newDecoder(nodeName, new(atomic.Pointer[enrichIndex]), policy, linkName)
	d.src = src
	return d
}

// DecodeFlow decodes one datapath record into a new, enriched flow.
func (d *Decoder) DecodeFlow(raw []byte) (*flowpb.Flow, error) {
	if d.src != nil {
		if snap := d.src.Current(); snap != d.lastSnap || d.index.Load() == nil {
			d.lastSnap = snap
			d.index.Store(newEnrichIndex(snap))
			d.forgetLinks()
		}
	}
	e, err := d.Decode(raw)
	if err != nil {
		return nil, err
	}
	return e.flow, nil
}
