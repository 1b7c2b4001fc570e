package agent

import (
	"context"
	"net/netip"

	"github.com/loupe-project/loupe/datapath"
)

// Datapath is what the agent needs from the loaded datapath. The daemon
// wires *datapath.Datapath; unit tests use an in-memory map.
type Datapath interface {
	UpsertEndpoint(hostIfindex uint32, ep EndpointInfo) error
	// DeleteEndpoint of a missing entry is not an error.
	DeleteEndpoint(hostIfindex uint32) error
	Endpoints() (map[uint32]EndpointInfo, error)
	UpsertIPCache(prefix netip.Prefix, identity uint32) error
	// DeleteIPCache of a missing prefix is not an error.
	DeleteIPCache(prefix netip.Prefix) error
	IPCache() (map[netip.Prefix]uint32, error)
	// ReadEvents blocks until ctx is done; raw is valid only during sink.
	ReadEvents(ctx context.Context, sink func(raw []byte)) error
	Close() error
}

// EndpointInfo is the datapath's endpoint map value.
type EndpointInfo = datapath.EndpointInfo

var _ Datapath = (*datapath.Datapath)(nil)
