// Package conndelta turns the running totals that connection flows carry
// (extensions.connection, contract/connection.go) into growth: how many
// bytes and packets each flow adds, whether it opens a connection, and a
// connection's handshake time once. The agent's metrics and the UI's map
// both count with it, so a connection counts once however many of its
// flows (SYN-ACK, periodic, FIN…) they see.
package conndelta

import (
	"net/netip"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
)

// structTypeURL is the Any type URL of a google.protobuf.Struct.
var structTypeURL = "type.googleapis.com/" + string((&structpb.Struct{}).ProtoReflect().Descriptor().FullName())

const (
	// MaxConnections bounds the state (the datapath's conntrack holds as
	// many entries per node).
	MaxConnections = 65536
	// TTL is how long a connection's state outlives its last flow: a live
	// one gets a periodic flow every report interval (5 s by default).
	TTL = 30 * time.Second
)

// Delta is what one flow adds to its connection's counts. Sent is from
// the client to the server.
type Delta struct {
	PacketsSent, BytesSent, PacketsReceived, BytesReceived uint64
	New                                                    bool          // the first flow of the connection seen
	Handshake                                              time.Duration // the handshake time, on the first flow that has it; else 0
	Client                                                 *flowpb.Endpoint
	Server                                                 *flowpb.Endpoint
	ServerPort                                             uint32
}

type key struct {
	client, server netip.AddrPort
	node           string
	ifindex        uint32
}

type state struct {
	pktSent, bytesSent, pktRecv, bytesRecv uint64
	timed                                  bool
	seen                                   int64
}

// Tracker holds the last totals of each connection. Not safe for
// concurrent use.
type Tracker struct {
	conns     map[key]*state
	lastSweep int64
	// Untracked counts flows left out because the state was full.
	Untracked uint64
}

// New returns an empty Tracker.
func New() *Tracker { return &Tracker{conns: map[key]*state{}} }

// Len is the number of connections held.
func (t *Tracker) Len() int { return len(t.conns) }

// Totals are a connection's running totals as one flow carries them.
type Totals struct {
	PacketsSent, BytesSent, PacketsReceived, BytesReceived uint64
	HandshakeNS                                            uint64 // 0: not timed
}

// TotalsOf reads a flow's connection extension; ok is false without one.
func TotalsOf(f *flowpb.Flow) (tot Totals, ok bool) {
	if x := f.GetExtensions(); x != nil && x.GetTypeUrl() == structTypeURL {
		if tot, ok, clean := totalsFromWire(x.GetValue()); clean {
			return tot, ok
		}
	}
	return totalsOfStruct(f)
}

// totalsOfStruct is TotalsOf through the generic unmarshal of the Struct:
// the reference, and the path for extensions totalsFromWire leaves.
func totalsOfStruct(f *flowpb.Flow) (tot Totals, ok bool) {
	c := contract.Connection(f)
	if c == nil {
		return tot, false
	}
	n := func(key string) uint64 { return uint64(c[key].GetNumberValue()) }
	return Totals{
		PacketsSent: n(contract.ExtConnPacketsSent), BytesSent: n(contract.ExtConnBytesSent),
		PacketsReceived: n(contract.ExtConnPacketsReceived), BytesReceived: n(contract.ExtConnBytesReceived),
		HandshakeNS: n(contract.ExtConnHandshakeNS),
	}, true
}

// Add returns what a flow adds; ok is false for flows without connection
// totals and when the state is full.
func (t *Tracker) Add(f *flowpb.Flow) (d Delta, ok bool) {
	tot, ok := TotalsOf(f)
	if !ok {
		return d, false
	}
	return t.AddTotals(f, tot)
}

// AddTotals is Add for a caller that has the flow's totals already,
// sparing the unmarshal.
func (t *Tracker) AddTotals(f *flowpb.Flow, tot Totals) (d Delta, ok bool) {
	src, _ := netip.ParseAddr(f.GetIP().GetSource())
	dst, _ := netip.ParseAddr(f.GetIP().GetDestination())
	return t.AddTotalsAt(f, tot, src, dst)
}

// AddTotalsAt is AddTotals for a caller that has the flow's IP source and
// destination as addresses too (the observer, whose decoder just wrote
// them out), sparing parsing them back on every flow.
func (t *Tracker) AddTotalsAt(f *flowpb.Flow, tot Totals, src, dst netip.Addr) (d Delta, ok bool) {
	now := f.GetTime().AsTime().UnixNano()
	t.sweep(now)
	d.Client, d.Server = f.GetSource(), f.GetDestination()
	ca, sa := src, dst
	cport, sport := ports(f)
	if f.GetIsReply().GetValue() {
		d.Client, d.Server, ca, sa, cport, sport = d.Server, d.Client, sa, ca, sport, cport
	}
	d.ServerPort = uint32(sport)
	k := key{netip.AddrPortFrom(ca, cport), netip.AddrPortFrom(sa, sport), f.GetNodeName(), f.GetInterface().GetIndex()}

	cur := state{
		pktSent: tot.PacketsSent, bytesSent: tot.BytesSent, pktRecv: tot.PacketsReceived, bytesRecv: tot.BytesReceived,
		seen: now,
	}
	st := t.conns[k]
	if st == nil || cur.pktSent < st.pktSent || cur.pktRecv < st.pktRecv {
		// New, or the 5-tuple was reused by a new connection (totals restart).
		if st == nil && len(t.conns) >= MaxConnections {
			t.Untracked++
			return d, false
		}
		st = &state{}
		t.conns[k] = st
		d.New = true
	}
	d.PacketsSent, d.BytesSent = cur.pktSent-st.pktSent, cur.bytesSent-st.bytesSent
	d.PacketsReceived, d.BytesReceived = cur.pktRecv-st.pktRecv, cur.bytesRecv-st.bytesRecv
	if cur.bytesSent < st.bytesSent || cur.bytesRecv < st.bytesRecv {
		d.BytesSent, d.BytesReceived = 0, 0 // out of order: never count backwards
	}
	cur.timed = st.timed
	if hs := tot.HandshakeNS; hs > 0 && !st.timed {
		d.Handshake = time.Duration(hs)
		cur.timed = true
	}
	*st = cur
	return d, true
}

// sweep forgets connections without a flow for TTL, at most once per
// second of flow time.
func (t *Tracker) sweep(now int64) {
	if now-t.lastSweep < int64(time.Second) && now >= t.lastSweep {
		return
	}
	t.lastSweep = now
	for k, st := range t.conns {
		if now-st.seen > int64(TTL) {
			delete(t.conns, k)
		}
	}
}

func ports(f *flowpb.Flow) (src, dst uint16) {
	switch l4 := f.GetL4().GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		return uint16(l4.TCP.GetSourcePort()), uint16(l4.TCP.GetDestinationPort())
	case *flowpb.Layer4_UDP:
		return uint16(l4.UDP.GetSourcePort()), uint16(l4.UDP.GetDestinationPort())
	case *flowpb.Layer4_SCTP:
		return uint16(l4.SCTP.GetSourcePort()), uint16(l4.SCTP.GetDestinationPort())
	}
	return 0, 0
}
