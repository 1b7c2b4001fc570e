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
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"

	"github.com/loupe-project/loupe/relay/relaytest"
)

// relayCase is one merge row: peers agents holding perPeer flows each.
type relayCase struct {
	row            string
	peers, perPeer int
}

// Both cases merge about the same number of flows; 128 peers stresses the
// fan-in (connections, heads, per-peer buffers) rather than the volume.
var relayCases = []relayCase{
	{"relay_merge_32peers", 32, 4095},
	{"relay_merge_128peers", 128, 1023},
}

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

func startRelayProc(ctx context.Context, name, logFile string, peers int, argv func(listen string) []string) (*relayProc, error) {
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
		if err == nil && st.GetNumConnectedNodes().GetValue() == uint32(peers) {
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.stop()
			return nil, fmt.Errorf("%s: not connected to %d peers within 30s (last: %v %v); log %s", name, peers, st, err, logFile)
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

// mergeAll reads every flow of every peer through the relay and returns
// flows/s and how many flows came older than one before them. The client
// reads each response's bytes and only the fields it checks: a full decode
// of every flow would make the client, not the relay, the bottleneck (it
// cost this client more than either relay spends on a flow).
func (p *relayProc) mergeAll(ctx context.Context, want int) (rate float64, outOfOrder int, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	t0 := time.Now()
	stream, err := p.conn.NewStream(ctx, &observerpb.Observer_ServiceDesc.Streams[0],
		observerpb.Observer_GetFlows_FullMethodName, grpc.ForceCodecV2(wireCodec{encoding.GetCodecV2(protoenc.Name)}))
	if err == nil {
		if err = stream.SendMsg(&observerpb.GetFlowsRequest{Number: uint64(want)}); err == nil {
			err = stream.CloseSend()
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("%s: %w", p.name, err)
	}
	n := 0
	var last int64
	var r wireResp
	for {
		err := stream.RecvMsg(&r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, 0, fmt.Errorf("%s: after %d flows: %w", p.name, n, err)
		}
		t, isFlow, err := flowTime(r.b)
		if err != nil {
			return 0, 0, fmt.Errorf("%s: response %d: %w", p.name, n, err)
		}
		if isFlow {
			n++
			if t < last {
				outOfOrder++
			}
			last = max(last, t)
		}
	}
	if n != want {
		return 0, 0, fmt.Errorf("%s: got %d flows, want %d", p.name, n, want)
	}
	return float64(n) / time.Since(t0).Seconds(), outOfOrder, nil
}

// runRelayRows runs every relay case.
func runRelayRows(ctx context.Context, cfg *Config) ([]Row, error) {
	out, err := runIn(ctx, cfg.Root, filepath.Join(cfg.Root, "test", "tools", "build.sh"))
	if err != nil {
		return nil, fmt.Errorf("build the stock hubble-relay: %w", err)
	}
	hubbleRelay := filepath.Join(strings.TrimSpace(out), "hubble-relay")
	var rows []Row
	for _, c := range relayCases {
		r, err := runRelayCase(ctx, cfg, c, hubbleRelay)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", c.row, err)
		}
	}
	return rows, nil
}

// runRelayCase merges c.peers agents' flows through loupe-relay and through
// the stock hubble-relay on the same fake agents, round by round, and
// compares the flows/s and each relay's peak RSS.
func runRelayCase(ctx context.Context, cfg *Config, c relayCase, hubbleRelay string) ([]Row, error) {
	var agents []*relaytest.Agent
	defer func() {
		for _, a := range agents {
			a.Stop()
		}
	}()
	t0 := time.Now().Add(-time.Hour)
	for i := range c.peers {
		name := fmt.Sprintf("bench-node%03d", i)
		a, err := relaytest.Start(relaytest.Options{Name: name, Capacity: c.perPeer})
		if err != nil {
			return nil, err
		}
		agents = append(agents, a)
		for j := range c.perPeer {
			// Interleaved times across nodes, so the merge has work to do.
			a.Add(relaytest.Flow(name, t0.Add(time.Duration(j*c.peers+i)*time.Millisecond), j))
		}
	}
	for _, a := range agents {
		agents[0].UpsertPeer(a.Name(), a.Addr())
	}
	peerSvc := agents[0].Addr()
	want := c.peers * c.perPeer

	// No web UI: this compares the relays alone.
	loupe, err := startRelayProc(ctx, "loupe-relay", filepath.Join(cfg.OutDir, c.row+"-loupe-relay.log"), c.peers, func(listen string) []string {
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
	hubble, err := startRelayProc(ctx, "hubble-relay", filepath.Join(cfg.OutDir, c.row+"-hubble-relay.log"), c.peers, func(listen string) []string {
		return []string{hubbleRelay, "serve", "--listen-address", listen, "--peer-service", peerSvc,
			"--disable-server-tls", "--disable-client-tls", "--gops=false", "--health-listen-address", health, "--log-level", "warn"}
	})
	if err != nil {
		return nil, err
	}
	defer hubble.stop()

	// One unmeasured pass each: connections, buffers and caches warm up.
	for _, p := range []*relayProc{loupe, hubble} {
		if _, _, err := p.mergeAll(ctx, want); err != nil {
			return nil, err
		}
	}
	var lv, hv, lc, hc []float64
	for r := range cfg.rounds() {
		first, second := loupe, hubble
		if r%2 == 1 {
			first, second = hubble, loupe
		}
		for _, p := range []*relayProc{first, second} {
			c0, err := cpuTicks(p.cmd.Process.Pid)
			if err != nil {
				return nil, err
			}
			v, ooo, err := p.mergeAll(ctx, want)
			if err != nil {
				return nil, err
			}
			c1, err := cpuTicks(p.cmd.Process.Pid)
			if err != nil {
				return nil, err
			}
			// CPU time per flow: clock ticks are 10 ms.
			us := float64(c1-c0) * 1e4 / float64(want)
			if p == loupe {
				if ooo > 0 {
					return nil, fmt.Errorf("loupe-relay: %d flows out of time order", ooo)
				}
				lv, lc = append(lv, v), append(lc, us)
			} else {
				hv, hc = append(hv, v), append(hc, us)
			}
		}
		cfg.Log.Info("relay", "case", c.row, "round", r+1, "loupe_flows_per_s", fmt.Sprintf("%.0f", lv[r]), "hubble_flows_per_s", fmt.Sprintf("%.0f", hv[r]))
	}
	rate, err := NewRow(c.row, "flows/s", lv, hv, "hubble-relay", 1, Higher,
		fmt.Sprintf("every flow of %d agents × %d through the relay to one client (in time order, checked), vs the stock Hubble Relay on the same agents", c.peers, c.perPeer))
	if err != nil {
		return nil, err
	}
	rows := []Row{rate}
	// CPU time is what the relays cost, whatever else the machine runs;
	// flows/s also depend on how the scheduler shares the cores.
	if cpu, err := NewRow(c.row+"_cpu_per_flow", "µs", lc, hc, "hubble-relay", 0.5, Lower,
		"each relay process's CPU time (user+system) per merged flow"); err == nil {
		rows = append(rows, cpu)
	} else {
		cfg.Log.Warn("relay cpu row", "err", err, "loupe_us", lc, "hubble_us", hc)
	}
	lm, hm := hwmMB(loupe.cmd.Process.Pid), hwmMB(hubble.cmd.Process.Pid)
	if mem, err := NewRow(c.row+"_peak_rss", "MB", []float64{lm}, []float64{hm}, "hubble-relay", 1, Lower,
		"each relay process's peak RSS over the run"); err == nil {
		rows = append(rows, mem)
	}
	return rows, nil
}
