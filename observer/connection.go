package observer

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer/conndelta"
)

// connTemplates are the connection extension's wire forms: by where it
// was observed (client, server) and whether the handshake time is known
// (the key is absent until it is).
var connTemplates = func() (t [2][2]*extTemplate) {
	for i, at := range [2]string{contract.ObservedAtClient, contract.ObservedAtServer} {
		fields := []extField{
			{key: contract.ExtConnPacketsSent}, {key: contract.ExtConnBytesSent},
			{key: contract.ExtConnPacketsReceived}, {key: contract.ExtConnBytesReceived},
			{key: contract.ExtConnObservedAt, str: at, isStr: true}, {key: contract.ExtConnHandshakeNS},
		}
		t[i][0] = newExtTemplate(contract.ExtConnection, fields[:len(fields)-1])
		t[i][1] = newExtTemplate(contract.ExtConnection, fields)
	}
	return t
}()

// connection puts a tracked connection's counters and handshake time on
// its flow (contract/connection.go), on the one veth that reports it.
// Drops have no conntrack entry; a flow of the other veth carries nothing,
// so no sum over flows counts a connection twice.
func (d *Decoder) connection(b *flowBlock, ev *datapath.Event, connDir flowpb.TrafficDirection) {
	f := &b.flow
	d.conn, d.connOK = conndelta.Totals{}, false
	if f.Verdict != flowpb.Verdict_FORWARDED || ev.PacketsFwd == 0 {
		return
	}
	clientHere := connDir == flowpb.TrafficDirection_EGRESS
	if connDir != flowpb.TrafficDirection_INGRESS && !clientHere {
		return
	}
	// The peer is the side of the packet that is not this veth's pod.
	peer := ev.SrcIdentity
	if ev.Direction == contract.DirectionEgress {
		peer = ev.DstIdentity
	}
	if !contract.ReportsConnection(clientHere, peer) {
		return
	}
	// Forward is the connection's first direction: the client's.
	nums := [...]float64{float64(ev.PacketsFwd), float64(ev.BytesFwd), float64(ev.PacketsRev), float64(ev.BytesRev), float64(ev.HandshakeNS)}
	at, hs := 1, 1
	if clientHere {
		at = 0
	}
	if ev.HandshakeNS == 0 {
		hs = 0 // unknown: the key is absent
	}
	if t := connTemplates[at][hs]; f.Extensions == nil {
		t.set(&b.ext, nums[:], &d.bytes)
		f.Extensions = &b.ext
	} else {
		fields := [...]extField{
			{key: contract.ExtConnPacketsSent, num: nums[0]}, {key: contract.ExtConnBytesSent, num: nums[1]},
			{key: contract.ExtConnPacketsReceived, num: nums[2]}, {key: contract.ExtConnBytesReceived, num: nums[3]},
			{key: contract.ExtConnObservedAt, str: [2]string{contract.ObservedAtClient, contract.ObservedAtServer}[at], isStr: true},
			{key: contract.ExtConnHandshakeNS, num: nums[4]},
		}
		setExtensionFields(f, contract.ExtConnection, fields[:len(fields)-1+hs])
	}
	d.conn = conndelta.Totals{PacketsSent: ev.PacketsFwd, BytesSent: ev.BytesFwd,
		PacketsReceived: ev.PacketsRev, BytesReceived: ev.BytesRev, HandshakeNS: ev.HandshakeNS}
	d.connOK = true
}

// ConnectionOf returns a flow's connection extension fields, or nil.
func ConnectionOf(f *flowpb.Flow) map[string]*structpb.Value { return contract.Connection(f) }

// setExtension adds one top-level key to the flow's Struct extensions,
// keeping the keys other features put there.
func setExtension(f *flowpb.Flow, key string, v *structpb.Struct) {
	s := &structpb.Struct{}
	if x := f.GetExtensions(); x != nil {
		if err := x.UnmarshalTo(s); err != nil {
			s = &structpb.Struct{} // not a Struct: ours replaces it
		}
	}
	if s.Fields == nil {
		s.Fields = map[string]*structpb.Value{}
	}
	s.Fields[key] = structpb.NewStructValue(v)
	if a, err := anypb.New(s); err == nil {
		f.Extensions = a
	}
}
