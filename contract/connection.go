package contract

import (
	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/structpb"
)

// A flow of a tracked connection (the new connection, its first reply,
// SYN/FIN/RST and the periodic record) carries the connection's counters
// and TCP handshake time in flow.extensions, the Struct that kernel drops
// use too, under its own key:
//
//	{"connection": {"packets_sent": 12, "bytes_sent": 104857600,
//	  "packets_received": 8, "bytes_received": 520,
//	  "handshake_latency_ns": 84000, "observed_at": "client"}}
//
// "sent" is from the connection's client (the side that sent its first
// packet) to its server, "received" the other way, whichever way the
// flow's own packet went. Bytes are whole packets from the Ethernet
// header, as the datapath's counters count them. Only one veth reports a
// connection (ReportsConnection), so summing flows never counts it twice.
const (
	ExtConnection          = "connection"
	ExtConnPacketsSent     = "packets_sent"
	ExtConnBytesSent       = "bytes_sent"
	ExtConnPacketsReceived = "packets_received"
	ExtConnBytesReceived   = "bytes_received"
	ExtConnHandshakeNS     = "handshake_latency_ns" // absent until the handshake completed, and for other protocols
	ExtConnObservedAt      = "observed_at"          // ObservedAtClient or ObservedAtServer
)

// Where a connection's counters were taken.
const (
	ObservedAtClient = "client" // the client pod's veth
	ObservedAtServer = "server" // the server pod's veth: the client is no loupe pod
)

// IsPodIdentity reports whether an identity is a pod's: one in the pod
// range or init (a local pod whose labels the agent does not know yet).
// Such a pod has a loupe veth of its own.
func IsPodIdentity(id uint32) bool {
	return id == IdentityInit || (id >= MinPodIdentity && id <= MaxPodIdentity)
}

// ReportsConnection is the one rule for which veth reports a connection:
// the client pod's, or the server pod's when the client has no loupe veth
// (clientEgress: the connection left this veth's pod; peer: the identity
// of the other side). L7 records follow the same rule.
func ReportsConnection(clientEgress bool, peer uint32) bool {
	return clientEgress || !IsPodIdentity(peer)
}

// Connection returns the fields of a flow's connection extension, or nil.
func Connection(f *flowpb.Flow) map[string]*structpb.Value {
	return extension(f, ExtConnection)
}

// extension returns one top-level key of a flow's Struct extensions.
func extension(f *flowpb.Flow, key string) map[string]*structpb.Value {
	x := f.GetExtensions()
	if x == nil || x.GetTypeUrl() != structTypeURL {
		return nil
	}
	var s structpb.Struct
	if err := x.UnmarshalTo(&s); err != nil {
		return nil
	}
	return s.GetFields()[key].GetStructValue().GetFields()
}
