package agent

import (
	"context"
	"net/netip"
)

// Datapath is what the agent needs from the loaded datapath. The daemon
// wires *datapath.Datapath; unit tests use an in-memory map.
type Datapath interface {
	UpsertEndpoint(hostIfindex uint32, ep EndpointInfo) error
	// DeleteEndpoint of a missing entry is not an error.
	DeleteEndpoint(hostIfindex uint32) error
	Endpoints() (map[uint32]EndpointInfo, error)
	// ReadEvents blocks until ctx is done; raw is valid only during sink.
	ReadEvents(ctx context.Context, sink func(raw []byte)) error
	Close() error
}

// EndpointInfo is the datapath's endpoint map value (datapath.EndpointInfo).
type EndpointInfo struct {
	ID, Identity  uint32
	IPv4, IPv6    netip.Addr
	PolicyIngress bool
	PolicyEgress  bool
}
