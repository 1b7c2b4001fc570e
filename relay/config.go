// Package relay is loupe-relay: it connects to every agent's Hubble Observer
// API, merges their flow streams by time and serves the same API cluster-wide.
package relay

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/tlsreload"
)

// The relay's own address and the agents' port, Hubble's.
var (
	DefaultListen    = ":" + strconv.Itoa(contract.RelayPort)
	DefaultAgentPort = strconv.Itoa(contract.ObserverPort)
)

// Defaults. The sort window follows Hubble Relay's drain timeout (1 s) but is
// larger than its 100 flows: a window only sorts what arrives within it, and
// 32 busy nodes fill 100 flows in well under a millisecond.
const (
	DefaultSortBufferLen          = 1000
	DefaultSortBufferDrainTimeout = time.Second
	DefaultClientQueueLen         = 4096
	DefaultPeerDialTimeout        = 1500 * time.Millisecond
	DefaultPeerIdleTimeout        = 3 * time.Second
	DefaultReconnectBaseDelay     = 250 * time.Millisecond
	DefaultReconnectMaxDelay      = 10 * time.Second
	DefaultPeerGoneGrace          = 5 * time.Second
)

// Config configures a relay Server. Zero values take the defaults above.
type Config struct {
	// Listen is the relay's own gRPC address.
	Listen string

	// SortBufferLen is the sort window, in flows.
	SortBufferLen int
	// SortBufferDrainTimeout is how long a flow may wait in the window for
	// older flows from other nodes before it is sent anyway.
	SortBufferDrainTimeout time.Duration
	// ClientQueueLen bounds the responses queued for one follow client; past
	// it, flows are dropped and reported as lost events.
	ClientQueueLen int

	// PeerDialTimeout is how long a request waits for a peer that is still
	// connecting before it counts the peer as unavailable.
	PeerDialTimeout time.Duration
	// PeerIdleTimeout bounds the silence of one peer inside a non-follow
	// request, so that a hung agent cannot stall the answer.
	PeerIdleTimeout time.Duration
	// ReconnectBaseDelay and ReconnectMaxDelay shape the exponential backoff
	// between connection attempts to a peer.
	ReconnectBaseDelay time.Duration
	ReconnectMaxDelay  time.Duration

	// ClientTLS, when set, is used to connect to agents (mTLS when it holds
	// a certificate); each connection reads its current files. Nil means
	// plain text.
	ClientTLS *tlsreload.Client
	// ServerTLS, when set, secures the relay's own listener.
	ServerTLS *tls.Config
	// Local, when set, is an in-process listener (such as a bufconn) also
	// served, in plain text: the web UI reads the relay through it whatever
	// the TLS of the TCP listener.
	Local net.Listener
	// Lab silences the plain-text warnings.
	Lab bool

	// Version is reported in ServerStatus.
	Version string
	Log     *slog.Logger
}

func (c *Config) setDefaults() error {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.SortBufferLen == 0 {
		c.SortBufferLen = DefaultSortBufferLen
	}
	if c.SortBufferDrainTimeout == 0 {
		c.SortBufferDrainTimeout = DefaultSortBufferDrainTimeout
	}
	if c.ClientQueueLen == 0 {
		c.ClientQueueLen = DefaultClientQueueLen
	}
	if c.PeerDialTimeout == 0 {
		c.PeerDialTimeout = DefaultPeerDialTimeout
	}
	if c.PeerIdleTimeout == 0 {
		c.PeerIdleTimeout = DefaultPeerIdleTimeout
	}
	if c.ReconnectBaseDelay == 0 {
		c.ReconnectBaseDelay = DefaultReconnectBaseDelay
	}
	if c.ReconnectMaxDelay == 0 {
		c.ReconnectMaxDelay = DefaultReconnectMaxDelay
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	switch {
	case c.SortBufferLen < 1:
		return fmt.Errorf("config: sort buffer length %d: must be at least 1", c.SortBufferLen)
	case c.SortBufferDrainTimeout < 0:
		return errors.New("config: sort buffer drain timeout must not be negative")
	case c.ClientQueueLen < 1:
		return fmt.Errorf("config: client queue length %d: must be at least 1", c.ClientQueueLen)
	case c.ReconnectMaxDelay < c.ReconnectBaseDelay:
		return errors.New("config: reconnect max delay is below the base delay")
	}
	return nil
}
