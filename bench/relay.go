package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/relay/relaytest"
)

const (
	relayPeers   = 32
	relayPerPeer = 4095
)

// relayProc is a relay running as its own process, so that its memory is
// its own.
type relayProc struct {
	name   string
	cmd    *exec.Cmd
	addr   string
	conn   *grpc.ClientConn
	client observerpb.ObserverClient
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startRelayProc(ctx context.Context, name, logFile string, argv func(listen string) []string) (*relayProc, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := argv(addr)
	cmd := exec.CommandContext(context.Background(), args[0], args[1:]...)
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	setPdeath(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &relayProc{name: name, cmd: cmd, addr: addr}
	p.conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))
	if err != nil {
		p.stop()
		return nil, err
	}
	p.client = observerpb.NewObserverClient(p.conn)
	// Ready once it reports every peer connected.
	deadline := time.Now().Add(30 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := p.client.ServerStatus(sctx, &observerpb.ServerStatusRequest{})
		cancel()
		if err == nil && st.GetNumConnectedNodes().GetValue() == relayPeers {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("%s: not connected to %d peers within 30s (last: %v %v); log %s", name, relayPeers, st, err, logFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (p *relayProc) stop() {
	if p.conn != nil {
		p.conn.Close()
	}
	_ = p.cmd.Cancel()
	_ = p.cmd.Wait()
}

// mergeAll reads every flow of every peer through the relay, in time order,
// and returns flows/s.
func (p *relayProc) mergeAll(ctx context.Context) (float64, error) {
	t0 := time.Now()
	stream, err := p.client.GetFlows(ctx, &observerpb.GetFlowsRequest{Number: relayPeers * relayPerPeer})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", p.name, err)
	}
	n := 0
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s: after %d flows: %w", p.name, n, err)
		}
		if resp.GetFlow() != nil {
			n++
		}
	}
	if n != relayPeers*relayPerPeer {
		return 0, fmt.Errorf("%s: got %d flows, want %d", p.name, n, relayPeers*relayPerPeer)
	}
	return float64(n) / time.Since(t0).Seconds(), nil
}

// runRelayRows merges 32 agents' flows (4095 each) through loupe-relay and
// through the stock hubble-relay on the same fake agents, round by round,
// and compares the flows/s and each relay's peak RSS.
func runRelayRows(ctx context.Context, cfg *Config) ([]Row, error) {
	out, err := runIn(ctx, cfg.Root, filepath.Join(cfg.Root, "test", "tools", "build.sh"))
	if err != nil {
		return nil, fmt.Errorf("build the stock hubble-relay: %w", err)
	}
	hubbleRelay := filepath.Join(strings.TrimSpace(out), "hubble-relay")

	var agents []*relaytest.Agent
	defer func() {
		for _, a := range agents {
			a.Stop()
		}
	}()
	t0 := time.Now().Add(-time.Hour)
	for i := range relayPeers {
		name := fmt.Sprintf("bench-node%02d", i)
		a, err := relaytest.Start(relaytest.Options{Name: name, Capacity: relayPerPeer})
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
		for j := range relayPerPeer {
			// Interleaved times across nodes, so the merge has work to do.
			a.Add(relaytest.Flow(name, t0.Add(time.Duration(j*relayPeers+i)*time.Millisecond), j))
		}
	}
	for _, a := range agents {
		agents[0].UpsertPeer(a.Name(), a.Addr())
	}
	peerSvc := agents[0].Addr()

	// No web UI: this compares the relays alone.
	loupe, err := startRelayProc(ctx, "loupe-relay", filepath.Join(cfg.OutDir, "loupe-relay.log"), func(listen string) []string {
		return []string{filepath.Join(cfg.BinDir, "loupe-relay"), "--lab", "--insecure-listen", listen, "--ui-listen=", "--peer-service", peerSvc, "--log-level", "warn"}
	})
	if err != nil {
		return nil, err
	}
	defer loupe.stop()
	health, err := freeAddr()
	if err != nil {
		return nil, err
	}
	hubble, err := startRelayProc(ctx, "hubble-relay", filepath.Join(cfg.OutDir, "hubble-relay.log"), func(listen string) []string {
		return []string{hubbleRelay, "serve", "--listen-address", listen, "--peer-service", peerSvc,
			"--disable-server-tls", "--disable-client-tls", "--gops=false", "--health-listen-address", health, "--log-level", "warn"}
	})
	if err != nil {
		return nil, err
	}
	defer hubble.stop()

	// One unmeasured pass each: connections, buffers and caches warm up.
	for _, p := range []*relayProc{loupe, hubble} {
		if _, err := p.mergeAll(ctx); err != nil {
			return nil, err
		}
	}
	var lv, hv []float64
	for r := range cfg.rounds() {
		first, second := loupe, hubble
		if r%2 == 1 {
			first, second = hubble, loupe
		}
		for _, p := range []*relayProc{first, second} {
			v, err := p.mergeAll(ctx)
			if err != nil {
				return nil, err
			}
			if p == loupe {
				lv = append(lv, v)
			} else {
				hv = append(hv, v)
			}
		}
		cfg.Log.Info("relay", "round", r+1, "loupe_flows_per_s", fmt.Sprintf("%.0f", lv[r]), "hubble_flows_per_s", fmt.Sprintf("%.0f", hv[r]))
	}
	rate, err := NewRow("relay_merge_32peers", "flows/s", lv, hv, "hubble-relay", 1, Higher,
		fmt.Sprintf("every flow of %d agents × %d through the relay to one client, vs the stock Hubble Relay on the same agents", relayPeers, relayPerPeer))
	if err != nil {
		return nil, err
	}
	rows := []Row{rate}
	lm, hm := hwmMB(loupe.cmd.Process.Pid), hwmMB(hubble.cmd.Process.Pid)
	if mem, err := NewRow("relay_merge_32peers_peak_rss", "MB", []float64{lm}, []float64{hm}, "hubble-relay", 1, Lower,
		"each relay process's peak RSS over the run"); err == nil {
		rows = append(rows, mem)
	}
	return rows, nil
}
