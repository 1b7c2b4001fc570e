package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	relaypb "github.com/cilium/cilium/api/v1/relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// PeerInfo is a snapshot of one peer of the pool.
type PeerInfo struct {
	// Key identifies the peer in the pool: the node name from peer
	// discovery, or the address of a static peer.
	Key string
	// Name is the node name: from discovery, else learnt from the agent's
	// GetNodes, else the address.
	Name          string
	Address       string
	TLS           bool
	TLSServerName string
	// State is NODE_CONNECTED or NODE_UNAVAILABLE (NODE_ERROR when the last
	// failure was a TLS error).
	State relaypb.NodeState
	// Connecting is true until the first connection attempt has finished.
	Connecting bool
	// Err is the last connection error, if any.
	Err     string
	Version string
	// MaxFlows is the agent's flow ring capacity (0: unknown).
	MaxFlows uint64
	// Gen changes every time the peer (re)connects, so a request can tell a
	// fresh connection from the one its stream failed on.
	Gen uint64

	client observerpb.ObserverClient
	conn   *grpc.ClientConn
}

type poolPeer struct {
	info       PeerInfo
	learntName string // from the agent, used when discovery gave none
	conn       *grpc.ClientConn
	cancel     context.CancelFunc
}

// Pool holds one gRPC connection per peer. Each connection reconnects on its
// own with exponential backoff, so a down peer never blocks the others.
type Pool struct {
	cfg *Config
	log *slog.Logger

	mu      sync.Mutex
	peers   map[string]*poolPeer
	changed chan struct{} // closed and replaced on every change
	gen     uint64
	closed  bool
}

// NewPool returns an empty pool; add peers with Upsert.
func NewPool(cfg *Config) *Pool {
	return &Pool{cfg: cfg, log: cfg.Log, peers: map[string]*poolPeer{}, changed: make(chan struct{})}
}

// notifyLocked wakes everyone waiting on the previous change channel.
func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Peers returns a snapshot sorted by name, and a channel closed on the next change.
func (p *Pool) Peers() ([]PeerInfo, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]PeerInfo, 0, len(p.peers))
	for _, pp := range p.peers {
		out = append(out, pp.info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, p.changed
}

// WaitSettled waits until no peer is still on its first connection attempt,
// or for at most timeout, and returns the snapshot.
func (p *Pool) WaitSettled(ctx context.Context, timeout time.Duration) []PeerInfo {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		peers, changed := p.Peers()
		settled := true
		for _, pi := range peers {
			if pi.Connecting {
				settled = false
			}
		}
		if settled {
			return peers
		}
		select {
		case <-changed:
		case <-t.C:
			return peers
		case <-ctx.Done():
			return peers
		}
	}
}

// WaitPeer waits, at most timeout, for a peer still on its first connection
// attempt. It returns the peer's snapshot and whether it is connected.
func (p *Pool) WaitPeer(ctx context.Context, key string, timeout time.Duration) (PeerInfo, bool) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		p.mu.Lock()
		pp, ok := p.peers[key]
		var info PeerInfo
		if ok {
			info = pp.info
		}
		changed := p.changed
		p.mu.Unlock()
		switch {
		case !ok:
			return info, false
		case info.State == relaypb.NodeState_NODE_CONNECTED:
			return info, true
		case !info.Connecting:
			return info, false
		}
		select {
		case <-changed:
		case <-t.C:
			return info, false
		case <-ctx.Done():
			return info, false
		}
	}
}

// Upsert adds a peer or updates it. A changed address or TLS server name
// replaces its connection.
func (p *Pool) Upsert(key, name, address, tlsServerName string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("pool: closed")
	}
	if old, ok := p.peers[key]; ok {
		if old.info.Address == address && old.info.TLSServerName == tlsServerName {
			if name != "" && old.info.Name != name {
				old.info.Name = name
				p.notifyLocked()
			}
			return nil
		}
		p.removeLocked(key)
	}
	pp := &poolPeer{info: PeerInfo{
		Key: key, Name: name, Address: address, TLSServerName: tlsServerName,
		TLS: p.cfg.ClientTLS != nil, State: relaypb.NodeState_NODE_UNAVAILABLE, Connecting: true,
	}}
	if pp.info.Name == "" {
		pp.info.Name = address
	}
	conn, err := p.dial(pp)
	if err != nil {
		return fmt.Errorf("pool: peer %s: %w", key, err)
	}
	pp.conn = conn
	pp.info.client = observerpb.NewObserverClient(conn)
	pp.info.conn = conn
	ctx, cancel := context.WithCancel(context.Background())
	pp.cancel = cancel
	p.peers[key] = pp
	p.notifyLocked()
	p.log.Info("peer added", "peer", pp.info.Name, "address", address)
	go p.monitor(ctx, pp)
	return nil
}

// Remove closes and forgets a peer; a missing peer is not an error.
func (p *Pool) Remove(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.peers[key]; ok {
		p.removeLocked(key)
		p.notifyLocked()
	}
}

func (p *Pool) removeLocked(key string) {
	pp := p.peers[key]
	delete(p.peers, key)
	pp.cancel()
	_ = pp.conn.Close()
	p.log.Info("peer removed", "peer", pp.info.Name, "address", pp.info.Address)
}

// Close closes every connection.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for key := range p.peers {
		p.removeLocked(key)
	}
	p.closed = true
	p.notifyLocked()
}

func (p *Pool) dial(pp *poolPeer) (*grpc.ClientConn, error) {
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if p.cfg.ClientTLS != nil {
		creds = p.cfg.ClientTLS.Credentials(pp.info.TLSServerName)
	}
	rec := func(err error) { p.recordErr(pp, err) }
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			rec(err)
		}
		return c, err
	}
	return grpc.NewClient(pp.info.Address,
		grpc.WithTransportCredentials(recordingCreds{creds, rec}),
		grpc.WithContextDialer(dialer),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: backoff.Config{
				BaseDelay:  p.cfg.ReconnectBaseDelay,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   p.cfg.ReconnectMaxDelay,
			},
			MinConnectTimeout: max(p.cfg.PeerDialTimeout, 5*time.Second),
		}),
		// The pool watches connectivity itself; an idle channel would hide a dead peer.
		grpc.WithIdleTimeout(0),
		grpc.WithUserAgent("loupe-relay/"+p.cfg.Version),
	)
}

// recordErr keeps the last connection error of a peer for statuses and GetNodes.
func (p *Pool) recordErr(pp *poolPeer, err error) {
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, context.Canceled) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pp.info.Err = err.Error()
	if pp.info.State != relaypb.NodeState_NODE_CONNECTED && !pp.info.Connecting {
		pp.info.State = downState(pp.info)
	}
	p.notifyLocked()
}

// monitor follows the connectivity of one peer until it is removed.
func (p *Pool) monitor(ctx context.Context, pp *poolPeer) {
	conn := pp.conn
	conn.Connect()
	for {
		s := conn.GetState()
		switch s {
		case connectivity.Ready:
			p.setState(pp, true)
			go p.learn(ctx, pp)
		case connectivity.Idle:
			// A lost transport leaves the channel idle: reconnect now, the
			// backoff applies to the attempts that follow.
			conn.Connect()
			p.setState(pp, false)
		case connectivity.TransientFailure:
			p.setState(pp, false)
		case connectivity.Connecting:
			p.mu.Lock()
			wasUp := pp.info.State == relaypb.NodeState_NODE_CONNECTED
			p.mu.Unlock()
			if wasUp {
				p.setState(pp, false)
			}
		case connectivity.Shutdown:
			return
		}
		if !conn.WaitForStateChange(ctx, s) {
			return
		}
	}
}

func (p *Pool) setState(pp *poolPeer, up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers[pp.info.Key] != pp {
		return // removed or replaced
	}
	was := pp.info.State
	if up {
		if was == relaypb.NodeState_NODE_CONNECTED {
			return
		}
		p.gen++
		pp.info.Gen = p.gen
		pp.info.State = relaypb.NodeState_NODE_CONNECTED
		pp.info.Err = ""
		pp.info.Connecting = false
		p.log.Info("peer connected", "peer", pp.info.Name, "address", pp.info.Address)
	} else {
		if was != relaypb.NodeState_NODE_CONNECTED && !pp.info.Connecting {
			return
		}
		pp.info.State = downState(pp.info)
		pp.info.Connecting = false
		p.log.Warn("peer unavailable", "peer", pp.info.Name, "address", pp.info.Address, "error", pp.info.Err)
	}
	p.notifyLocked()
}

// learn asks a freshly connected agent for its node name and version.
func (p *Pool) learn(ctx context.Context, pp *poolPeer) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var name, version string
	var maxFlows uint64
	if resp, err := pp.info.client.GetNodes(ctx, &observerpb.GetNodesRequest{}); err == nil && len(resp.GetNodes()) == 1 {
		name, version = resp.GetNodes()[0].GetName(), resp.GetNodes()[0].GetVersion()
	}
	if st, err := pp.info.client.ServerStatus(ctx, &observerpb.ServerStatusRequest{}); err == nil {
		maxFlows = st.GetMaxFlows()
		if version == "" {
			version = st.GetVersion()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.peers[pp.info.Key] != pp {
		return
	}
	if name != "" && pp.info.Key == pp.info.Address && pp.info.Name == pp.info.Address {
		pp.learntName = name
		pp.info.Name = name
	}
	pp.info.Version = version
	pp.info.MaxFlows = maxFlows
	p.notifyLocked()
}

// downState is NODE_ERROR when a peer fails on TLS (a configuration problem
// that retrying will not fix), NODE_UNAVAILABLE otherwise.
func downState(pi PeerInfo) relaypb.NodeState {
	if pi.TLS && isTLSError(pi.Err) {
		return relaypb.NodeState_NODE_ERROR
	}
	return relaypb.NodeState_NODE_UNAVAILABLE
}

func isTLSError(msg string) bool {
	return strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:") || strings.Contains(msg, "tls handshake")
}

// recordingCreds remembers handshake and read errors so that a peer's state
// can say why it is unavailable ("tls: certificate required").
type recordingCreds struct {
	credentials.TransportCredentials
	rec func(error)
}

func (c recordingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		c.rec(fmt.Errorf("tls handshake: %w", err))
		return conn, info, err
	}
	return recordingConn{Conn: conn, rec: c.rec}, info, nil
}

func (c recordingCreds) Clone() credentials.TransportCredentials {
	return recordingCreds{c.TransportCredentials.Clone(), c.rec}
}

type recordingConn struct {
	net.Conn
	rec func(error)
}

func (c recordingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.rec(err)
	}
	return n, err
}
