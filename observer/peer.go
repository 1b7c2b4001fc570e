package observer

import (
	"strconv"

	peerpb "github.com/cilium/cilium/api/v1/peer"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/metadata"
)

type peerServer struct {
	peerpb.UnimplementedPeerServer
	o *Observer
}

// peerAddress is a node's Observer address, by the contract's rule.
func peerAddress(n *corev1.Node) string {
	return contract.ObserverAddress(n, strconv.Itoa(contract.ObserverPort))
}

// peers maps node name to address for every node of a snapshot.
func peers(s *metadata.Snapshot) map[string]string {
	out := make(map[string]string, len(s.Nodes))
	for _, n := range s.Nodes {
		out[n.Name] = peerAddress(n)
	}
	return out
}

// Notify sends every known node as PEER_ADDED, then the differences after
// each metadata change, until the client goes away.
func (p *peerServer) Notify(_ *peerpb.NotifyRequest, stream grpc.ServerStreamingServer[peerpb.ChangeNotification]) error {
	ctx := stream.Context()
	src := p.o.cfg.Metadata
	changed := src.Subscribe(ctx) // before reading, so no change is missed
	send := func(name, addr string, t peerpb.ChangeNotificationType) error {
		cn := &peerpb.ChangeNotification{Name: name, Address: addr, Type: t}
		if p.o.cfg.TLS.Enabled() {
			cn.Tls = &peerpb.TLS{ServerName: contract.TLSServerName(name)}
		}
		return stream.Send(cn)
	}
	known := peers(src.Current())
	for _, name := range sortedKeys(known) {
		if err := send(name, known[name], peerpb.ChangeNotificationType_PEER_ADDED); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-changed:
			if !ok {
				return nil
			}
		}
		now := peers(src.Current())
		for _, name := range sortedKeys(now) {
			old, had := known[name]
			var err error
			switch {
			case !had:
				err = send(name, now[name], peerpb.ChangeNotificationType_PEER_ADDED)
			case old != now[name]:
				err = send(name, now[name], peerpb.ChangeNotificationType_PEER_UPDATED)
			}
			if err != nil {
				return err
			}
		}
		for _, name := range sortedKeys(known) {
			if _, ok := now[name]; !ok {
				if err := send(name, known[name], peerpb.ChangeNotificationType_PEER_DELETED); err != nil {
					return err
				}
			}
		}
		known = now
	}
}
