package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/internal/tlsreload"
)

// PeerSink is what a PeerSource keeps up to date; the Pool is one.
type PeerSink interface {
	// Upsert adds or updates a peer. key identifies it; name is its node
	// name ("" to learn it from the agent).
	Upsert(key, name, address, tlsServerName string) error
	Remove(key string)
}

// PeerSource discovers agents. Run keeps sink up to date until ctx ends.
type PeerSource interface {
	Run(ctx context.Context, sink PeerSink) error
}

// StaticPeers is a fixed list of agent addresses (host:port).
type StaticPeers []string

// Run adds every address and keeps them until ctx ends.
func (sp StaticPeers) Run(ctx context.Context, sink PeerSink) error {
	for _, a := range sp {
		addr := withDefaultPort(a)
		if err := sink.Upsert(addr, "", addr, ""); err != nil {
			return fmt.Errorf("static peers: %w", err)
		}
	}
	<-ctx.Done()
	return nil
}

// PeerService follows an agent's peer.Peer Notify stream: every node the
// agent knows becomes a peer, and leaves when the agent says it is deleted.
type PeerService struct {
	// Address of the agent serving peer.Peer (host:port).
	Address string
	// TLS for that connection; nil is plain text.
	TLS *tlsreload.Client
	// GoneGrace is how long, after a reconnect, a peer that the new stream
	// has not listed again is kept before it is removed.
	GoneGrace time.Duration
	RetryBase time.Duration
	RetryMax  time.Duration
	Log       *slog.Logger
}

// Run follows the peer service until ctx ends, reconnecting with backoff.
func (ps *PeerService) Run(ctx context.Context, sink PeerSink) error {
	log := ps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	grace, base, maxDelay := ps.GoneGrace, ps.RetryBase, ps.RetryMax
	if grace == 0 {
		grace = DefaultPeerGoneGrace
	}
	if base == 0 {
		base = DefaultReconnectBaseDelay
	}
	if maxDelay == 0 {
		maxDelay = DefaultReconnectMaxDelay
	}
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if ps.TLS != nil {
		creds = ps.TLS.Credentials("")
	}
	conn, err := grpc.NewClient(withDefaultPort(ps.Address), grpc.WithTransportCredentials(creds))
	if err != nil {
		return fmt.Errorf("peer service %s: %w", ps.Address, err)
	}
	defer conn.Close()
	client := peerpb.NewPeerClient(conn)

	// known maps a peer key to whether the current stream has listed it.
	known := map[string]bool{}
	delay := base
	for ctx.Err() == nil {
		listed, err := ps.follow(ctx, client, sink, known, grace, log)
		if ctx.Err() != nil {
			return nil
		}
		if listed {
			delay = base
		}
		log.Warn("peer service stream ended, retrying", "address", ps.Address, "error", err, "in", delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil
		}
		delay = min(2*delay, maxDelay)
	}
	return nil
}

// follow runs one Notify stream; it reports whether it received anything.
func (ps *PeerService) follow(ctx context.Context, client peerpb.PeerClient, sink PeerSink, known map[string]bool,
	grace time.Duration, log *slog.Logger) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Notify(ctx, &peerpb.NotifyRequest{})
	if err != nil {
		return false, fmt.Errorf("notify: %w", err)
	}
	for k := range known {
		known[k] = false // until this stream lists it again
	}
	sweep := time.NewTimer(grace)
	defer sweep.Stop()
	type recv struct {
		cn  *peerpb.ChangeNotification
		err error
	}
	ch := make(chan recv)
	go func() {
		for {
			cn, err := stream.Recv()
			select {
			case ch <- recv{cn, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	got := false
	for {
		select {
		case <-sweep.C:
			for k, listed := range known {
				if !listed {
					log.Info("peer not listed after reconnect, removing", "peer", k)
					sink.Remove(k)
					delete(known, k)
				}
			}
		case r := <-ch:
			if r.err != nil {
				return got, fmt.Errorf("notify: %w", r.err)
			}
			got = true
			ps.apply(r.cn, sink, known, log)
		case <-ctx.Done():
			return got, ctx.Err()
		}
	}
}

func (ps *PeerService) apply(cn *peerpb.ChangeNotification, sink PeerSink, known map[string]bool, log *slog.Logger) {
	name := cn.GetName()
	if name == "" {
		log.Warn("peer notification without a name, ignored", "address", cn.GetAddress())
		return
	}
	switch cn.GetType() {
	case peerpb.ChangeNotificationType_PEER_ADDED, peerpb.ChangeNotificationType_PEER_UPDATED:
		addr := cn.GetAddress()
		if addr == "" || strings.HasPrefix(addr, "unix://") {
			log.Warn("peer has no network address, ignored", "peer", name, "address", addr)
			return
		}
		if err := sink.Upsert(name, name, withDefaultPort(addr), cn.GetTls().GetServerName()); err != nil {
			log.Warn("add peer", "peer", name, "error", err)
			return
		}
		known[name] = true
	case peerpb.ChangeNotificationType_PEER_DELETED:
		sink.Remove(name)
		delete(known, name)
	}
}

// withDefaultPort adds the agent's default port to a bare host or IP.
func withDefaultPort(addr string) string {
	if _, _, err := net.SplitHostPort(addr); err == nil {
		return addr
	}
	var ae *net.AddrError
	if _, _, err := net.SplitHostPort(addr); errors.As(err, &ae) && strings.Contains(ae.Err, "missing port") {
		return net.JoinHostPort(strings.Trim(addr, "[]"), DefaultAgentPort)
	}
	return addr
}
