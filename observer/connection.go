package observer

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer/conndelta"
)

// connection puts a tracked connection's counters and handshake time on
// its flow (contract/connection.go), on the one veth that reports it.
// Drops have no conntrack entry; a flow of the other veth carries nothing,
// so no sum over flows counts a connection twice.
func (d *Decoder) connection(f *flowpb.Flow, ev *datapath.Event, connDir flowpb.TrafficDirection) {
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
	at := contract.ObservedAtServer
	if clientHere {
		at = contract.ObservedAtClient
	}
	// Forward is the connection's first direction: the client's.
	fields := [...]extField{
		{key: contract.ExtConnPacketsSent, num: float64(ev.PacketsFwd)},
		{key: contract.ExtConnBytesSent, num: float64(ev.BytesFwd)},
		{key: contract.ExtConnPacketsReceived, num: float64(ev.PacketsRev)},
		{key: contract.ExtConnBytesReceived, num: float64(ev.BytesRev)},
		{key: contract.ExtConnObservedAt, str: at, isStr: true},
		{key: contract.ExtConnHandshakeNS, num: float64(ev.HandshakeNS)},
	}
	n := len(fields)
	if ev.HandshakeNS == 0 {
		n-- // unknown: the key is absent
	}
	setExtensionFields(f, contract.ExtConnection, fields[:n])
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
