package bench

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/net/ipv4"
)

// kdropRate is the kernel drops per second the agent's CPU is measured at.
const kdropRate = 100000

// kdropCPUBudget is the agent CPU, in cores, loupe allows itself at
// kdropRate: the tracepoint's rate limit must keep the agent's work flat
// however fast the kernel drops.
const kdropCPUBudget = 0.10

// kdropClosedPort is a UDP port no bench pod serves.
const kdropClosedPort = 9

// runKernelDrops floods a closed UDP port of pod s1 from c1 at kdropRate
// datagrams/s (each one a NO_SOCKET kernel drop in s1's namespace) and
// measures the CPU of s1's node agent, against the same agent idle over
// the same time in the same round.
func runKernelDrops(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	c1, s1 := bl.pods["c1"], bl.pods["s1"]
	pid, err := agentPID(bl.lab.AgentPIDFile(s1.Node.Name))
	if err != nil {
		return nil, err
	}
	dur := pick(cfg, 5*time.Second, 2*time.Second, 500*time.Millisecond)
	var busy, idle, detached, rates, budget []float64
	for r := range cfg.rounds() {
		cpuOver := func(load func() (int64, error)) (float64, int64, error) {
			t0, err := cpuTicks(pid)
			if err != nil {
				return 0, 0, err
			}
			start := time.Now()
			n, err := load()
			if err != nil {
				return 0, 0, err
			}
			t1, err := cpuTicks(pid)
			if err != nil {
				return 0, 0, err
			}
			return float64(t1-t0) / 100 / time.Since(start).Seconds(), n, nil
		}
		idleCPU, _, err := cpuOver(func() (int64, error) {
			select {
			case <-time.After(dur):
			case <-ctx.Done():
			}
			return 0, ctx.Err()
		})
		if err != nil {
			return nil, err
		}
		busyCPU, sent, err := cpuOver(func() (int64, error) {
			return udpFlood(ctx, c1.Netns, s1.IP, kdropClosedPort, kdropRate, dur)
		})
		if err != nil {
			return nil, err
		}
		// The same flood with every tracepoint detached: what the flood
		// costs the agent without kernel drops (its datapath's own events).
		if err := setKernelDrops(bl, false); err != nil {
			return nil, err
		}
		offCPU, _, err := cpuOver(func() (int64, error) {
			return udpFlood(ctx, c1.Netns, s1.IP, kdropClosedPort, kdropRate, dur)
		})
		if aerr := setKernelDrops(bl, true); aerr != nil {
			return nil, aerr
		}
		if err != nil {
			return nil, err
		}
		detached = append(detached, offCPU)
		rate := float64(sent) / dur.Seconds()
		busy, idle, rates, budget = append(busy, busyCPU), append(idle, idleCPU), append(rates, rate), append(budget, kdropCPUBudget)
		cfg.Log.Info("kernel drops", "round", r+1, "drops_per_s", fmt.Sprintf("%.0f", rate),
			"agent_cpu_cores", fmt.Sprintf("%.3f", busyCPU), "idle_agent_cpu_cores", fmt.Sprintf("%.3f", idleCPU))
	}
	note := fmt.Sprintf("UDP to a closed port of s1 at %.0f datagrams/s achieved (target %d; each a NO_SOCKET kernel drop), agent of s1's node; the same agent idle: %.3f cores, under the same flood with the tracepoints detached: %.3f cores",
		Median(rates), kdropRate, Median(idle), Median(detached))
	row, err := NewRow("kernel_drops_agent_cpu", "cores", busy, budget, fmt.Sprintf("budget %.2f cores", kdropCPUBudget), 1, Lower, note)
	if err != nil {
		return nil, err
	}
	return []Row{row}, nil
}

// udpFlood sends datagrams from netns to ip:port at rate per second for d,
// from an unconnected socket (the port's ICMP errors do not stop it), and
// returns how many it sent. It writes them in batches with sendmmsg: one
// write syscall per datagram cannot reach kdropRate on a small machine.
func udpFlood(ctx context.Context, netns, ip string, port, rate int, d time.Duration) (int64, error) {
	var pc net.PacketConn
	err := ns.WithNetNSPath(netns, func(ns.NetNS) error {
		var err error
		pc, err = net.ListenPacket("udp4", ":0")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("udp flood socket: %w", err)
	}
	defer pc.Close()
	dst, err := net.ResolveUDPAddr("udp4", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return 0, err
	}
	const batch = 64
	msgs := make([]ipv4.Message, batch)
	for i := range msgs {
		msgs[i] = ipv4.Message{Buffers: [][]byte{make([]byte, 16)}, Addr: dst}
	}
	bc := ipv4.NewPacketConn(pc)
	start := time.Now()
	var sent int64
	for time.Since(start) < d && ctx.Err() == nil {
		for range 8 {
			if n, err := bc.WriteBatch(msgs, 0); err == nil {
				sent += int64(n)
			}
		}
		// Pace to rate: sleep until the batches' due time.
		due := start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))
		if w := time.Until(due); w > 0 {
			time.Sleep(w)
		}
	}
	return sent, ctx.Err()
}
