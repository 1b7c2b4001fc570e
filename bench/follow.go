package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"

	"github.com/loupe-project/loupe/lab"
)

// followBudgetMS is the follow latency issue #30 allows (p99), the row's
// baseline: there is no stock figure to beat, Hubble Relay waits out its
// 1 s drain timeout for quiet nodes.
const followBudgetMS = 100

const followPort = 5301

// followManifest puts a client and a server on node 1; every other node
// stays idle, so only their watermarks can release node 1's flows early.
func followManifest(node1 string) string {
	pod := func(name string) string {
		return fmt.Sprintf("---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {app: %s}}\nspec:\n  nodeName: %s\n  containers:\n  - name: main\n", name, benchNS, name, node1)
	}
	return fmt.Sprintf("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", benchNS) + pod("c1") + pod("s1")
}

// runFollowRows measures relay_follow_latency_p99 on labs of 2 and 8 nodes.
func runFollowRows(ctx context.Context, cfg *Config) ([]Row, error) {
	var rows []Row
	for _, nodes := range []int{2, 8} {
		r, err := runFollowLab(ctx, cfg, nodes)
		if r != nil {
			rows = append(rows, *r)
		}
		if err != nil {
			return rows, fmt.Errorf("%d nodes: %w", nodes, err)
		}
	}
	return rows, nil
}

func runFollowLab(ctx context.Context, parent *Config, nodes int) (*Row, error) {
	cfg := *parent
	cfg.LabDir = parent.LabDir + "-follow"
	cfg.LabName = parent.LabName + "f"
	downLab(&cfg)
	defer downLab(&cfg)
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, err
	}
	mf := filepath.Join(cfg.OutDir, "follow-lab.yaml")
	if err := os.WriteFile(mf, []byte(followManifest(cfg.LabName+"-node1")), 0o644); err != nil {
		return nil, err
	}
	start := time.Now()
	if _, err := run(ctx, filepath.Join(cfg.BinDir, "loupe"), "lab", "up", "--lab-dir", cfg.LabDir, "--name", cfg.LabName,
		"--nodes", strconv.Itoa(nodes), "-f", mf); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	l, err := lab.Load(cfg.LabDir)
	if err != nil {
		return nil, err
	}
	cfg.Log.Info("follow lab up", "nodes", nodes, "took", time.Since(start).Round(time.Millisecond))
	bl := &benchLab{cfg: &cfg, lab: l, pods: map[string]labPod{}}
	c1, err := bl.readPod("c1")
	if err != nil {
		return nil, err
	}
	s1, err := bl.readPod("s1")
	if err != nil {
		return nil, err
	}
	srv, err := startRRServer(s1.Netns, followPort)
	if err != nil {
		return nil, err
	}
	defer srv.stop()

	conn, err := grpc.NewClient(l.RelayAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	dur := pick(&cfg, 5*time.Second, 3*time.Second, time.Second)
	var p99s []float64
	var flows, outOfOrder int
	for r := range cfg.rounds() {
		lat, ooo, err := followRound(ctx, conn, c1, s1, dur)
		if err != nil {
			return nil, err
		}
		if len(lat) < 20 {
			return nil, fmt.Errorf("round %d: only %d flows followed", r+1, len(lat))
		}
		slices.Sort(lat)
		p99 := lat[len(lat)*99/100]
		p99s = append(p99s, p99)
		flows += len(lat)
		outOfOrder += ooo
		cfg.Log.Info("follow", "nodes", nodes, "round", r+1, "flows", len(lat), "p50_ms", fmt.Sprintf("%.1f", lat[len(lat)/2]),
			"p99_ms", fmt.Sprintf("%.1f", p99), "max_ms", fmt.Sprintf("%.1f", lat[len(lat)-1]), "out_of_order", ooo)
	}
	budget := make([]float64, len(p99s))
	for i := range budget {
		budget[i] = followBudgetMS
	}
	name := "relay_follow_latency_p99"
	if nodes != 8 {
		name += fmt.Sprintf("_%dnodes", nodes)
	}
	row, err := NewRow(name, "ms", p99s, budget, "budget", 1, Lower,
		fmt.Sprintf("flow time to a follower through loupe-relay, lab of %d nodes with %d idle; %d flows, %d out of time order",
			nodes, nodes-1, flows, outOfOrder))
	if err != nil {
		return nil, err
	}
	if outOfOrder > 0 {
		return &row, fmt.Errorf("%d flows out of time order", outOfOrder)
	}
	return &row, nil
}

// followRound follows the relay while c1 opens short connections to s1 for
// d, and returns each flow's latency (ms, receive time minus flow time) and
// how many flows came older than one before them.
func followRound(ctx context.Context, conn *grpc.ClientConn, c1, s1 labPod, d time.Duration) ([]float64, int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.NewStream(ctx, &observerpb.Observer_ServiceDesc.Streams[0],
		observerpb.Observer_GetFlows_FullMethodName, grpc.ForceCodecV2(wireCodec{encoding.GetCodecV2(protoenc.Name)}))
	if err == nil {
		if err = stream.SendMsg(&observerpb.GetFlowsRequest{Follow: true}); err == nil {
			err = stream.CloseSend()
		}
	}
	if err != nil {
		return nil, 0, err
	}
	var (
		mu         sync.Mutex
		lat        []float64
		outOfOrder int
		recvErr    error
	)
	t0 := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() {
		var r wireResp
		var last int64
		for {
			if err := stream.RecvMsg(&r); err != nil {
				if ctx.Err() == nil {
					recvErr = err
				}
				return
			}
			now := time.Now().UnixNano()
			t, isFlow, err := flowTime(r.b)
			if err != nil {
				recvErr = err
				return
			}
			if !isFlow || t < t0.UnixNano() {
				continue
			}
			mu.Lock()
			if t < last {
				outOfOrder++
			}
			last = max(last, t)
			lat = append(lat, float64(now-t)/1e6)
			mu.Unlock()
		}
	})
	time.Sleep(300 * time.Millisecond) // the relay opens the peers' streams
	trafficErr := paced(ctx, c1.Netns, s1.IP, followPort, 20*time.Millisecond, d)
	time.Sleep(1500 * time.Millisecond) // past the drain timeout: every flow is out
	cancel()
	wg.Wait()
	if trafficErr != nil {
		return nil, 0, trafficErr
	}
	if recvErr != nil {
		return nil, 0, recvErr
	}
	return lat, outOfOrder, nil
}

// paced opens one short connection from netns to ip:port every gap for d.
func paced(ctx context.Context, netns, ip string, port int, gap, d time.Duration) error {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	return inNetns(netns, func() error {
		end := time.Now().Add(d)
		dialer := net.Dialer{Timeout: 2 * time.Second}
		buf := []byte{1}
		for time.Now().Before(end) && ctx.Err() == nil {
			c, err := dialer.Dial("tcp4", addr)
			if err != nil {
				return err
			}
			_, err = c.Write(buf)
			if err == nil {
				_, err = c.Read(buf)
			}
			c.Close()
			if err != nil {
				return err
			}
			time.Sleep(gap)
		}
		return nil
	})
}
