package cni_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The agent is the ring buffer's only reader (a BPF ring buffer has one
// consumer position), so the tests see datapath events where users do:
// as flows from the agent's Observer API, on the unix socket it serves
// next to its endpoint socket.
func (n *node) flows(ctx context.Context) ([]*flowpb.Flow, error) {
	conn, err := grpc.NewClient("unix://"+filepath.Join(filepath.Dir(n.socket), "observer.sock"),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	stream, err := observerpb.NewObserverClient(conn).GetFlows(ctx, &observerpb.GetFlowsRequest{Number: 4096})
	if err != nil {
		return nil, err
	}
	var out []*flowpb.Flow
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if f := r.GetFlow(); f != nil {
			out = append(out, f)
		}
	}
}

// waitFlow polls the agent's flows until match accepts one.
func (n *node) waitFlow(t *testing.T, what string, match func(*flowpb.Flow) bool) *flowpb.Flow {
	t.Helper()
	var got *flowpb.Flow
	var seen int
	err := poll(15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		fs, err := n.flows(ctx)
		if err != nil {
			return err
		}
		seen = len(fs)
		for _, f := range fs {
			if match(f) {
				got = f
				return nil
			}
		}
		return fmt.Errorf("no %s among %d flows", what, seen)
	})
	if err != nil {
		t.Fatalf("events: %v", err)
	}
	return got
}

func ipIs(f *flowpb.Flow, src, dst netip.Addr) bool {
	return f.GetIP().GetSource() == src.String() && f.GetIP().GetDestination() == dst.String()
}

// checkFlowEvents wants a TCP event of the connection a:sport -> b:dport.
func (n *node) checkFlowEvents(t *testing.T, a, b netip.Addr, sport, dport uint16) {
	t.Helper()
	n.waitFlow(t, fmt.Sprintf("TCP flow %s:%d -> %s:%d", a, sport, b, dport), func(f *flowpb.Flow) bool {
		tcp := f.GetL4().GetTCP()
		return ipIs(f, a, b) && tcp != nil && tcp.GetSourcePort() == uint32(sport) && tcp.GetDestinationPort() == uint32(dport) &&
			f.GetVerdict() == flowpb.Verdict_FORWARDED
	})
}

// checkDropEvent wants a drop event for the forged datagram.
func (n *node) checkDropEvent(t *testing.T, src, dst netip.Addr, sport, dport uint16) {
	t.Helper()
	n.waitFlow(t, fmt.Sprintf("drop of UDP %s:%d -> %s:%d", src, sport, dst, dport), func(f *flowpb.Flow) bool {
		udp := f.GetL4().GetUDP()
		return ipIs(f, src, dst) && udp != nil && udp.GetSourcePort() == uint32(sport) && udp.GetDestinationPort() == uint32(dport) &&
			f.GetVerdict() == flowpb.Verdict_DROPPED && f.GetDropReasonDesc() == flowpb.DropReason_INVALID_SOURCE_IP
	})
}
