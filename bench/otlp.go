package bench

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"time"
)

// runOTLP runs the OTLP exporter's pipeline benchmark (package otlp): flows
// per second through the whole exporter to the collector's own pdata
// receiver in process, one core for both. The bar is the datapath-event
// benchmark's target: an agent exporting every flow must keep up with it.
func runOTLP(ctx context.Context, cfg *Config) ([]Row, error) {
	bin, err := testBinary(ctx, cfg, cfg.Root, "./otlp", "otlp.test")
	if err != nil {
		return nil, err
	}
	const pipeline, enqueue, remote = "BenchmarkExportPipeline", "BenchmarkFlowEnqueue", "BenchmarkExportPipelineRemote"
	out, err := runIn(ctx, cfg.Root, bin, "-test.run=^$", "-test.bench=^("+pipeline+"|"+enqueue+"|"+remote+")$",
		"-test.count="+strconv.Itoa(cfg.rounds()), "-test.benchtime="+pick(cfg, "2s", "1s", "200ms"), "-test.benchmem", "-test.cpu=1")
	if err != nil {
		return nil, err
	}
	rs := ParseBench(out)
	// Per CPU-second of the benchmark process: wall-clock rates on a
	// shared machine measure the neighbours.
	rates := Samples(rs, pipeline, "flows/cpu-s")
	targets := make([]float64, len(rates))
	for i := range targets {
		targets[i] = eventsTarget
	}
	enq := Samples(rs, enqueue, "ns/op")
	note := "raw records through the exporter to an in-process pdata receiver, per CPU-second of both; target: the events benchmark's 200k/s"
	if len(enq) > 0 {
		note += fmt.Sprintf("; Flow() on the event path: %.0f ns", enq[0])
	}
	row, err := NewRow("otlp_export_rate", "flows/s/core", rates, targets, "target 200k/s", 1, Higher, note)
	if err != nil {
		return nil, fmt.Errorf("otlp: %w\n%s", err, tailStr(out, 2000))
	}
	// The same with the receiver in its own process, as a collector is:
	// the exporter's process alone, what export costs an agent.
	own := Samples(rs, remote, "flows/cpu-s")
	both := Samples(rs, remote, "flows/cpu-s-both")
	note = "raw records through the exporter to a pdata receiver in another process, per CPU-second of the exporter's process; target 200k/s"
	if len(both) > 0 {
		note += fmt.Sprintf("; with the receiver's CPU: %.0f flows/s", Median(both))
	}
	exp, err := NewRow("otlp_export_rate_exporter", "flows/s/core", own, targets, "target 200k/s", 1, Higher, note)
	if err != nil {
		return []Row{row}, fmt.Errorf("otlp: %w\n%s", err, tailStr(out, 2000))
	}
	return []Row{row, exp}, nil
}

// runOTLPKeepUp restarts node 1's agent exporting every flow (raw) to an
// OTLP receiver in the node's netns, offers the events benchmark's target
// rate from the event source, and measures whether the agent still keeps
// up: events delivered as flows, and flows that reached the receiver. The
// agent is left with the lab's own settings.
func runOTLPKeepUp(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	node := bl.pods["c1"].Node
	var lis net.Listener
	if err := inNetns(node.NetNSPath(), func() (err error) {
		lis, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		return nil, fmt.Errorf("otlp keep-up: %w", err)
	}
	recv, err := startNicedReceiver(lis.(*net.TCPListener))
	lis.Close() // the child has its own copy
	if err != nil {
		return nil, err
	}
	defer recv.Stop()
	agentBin := filepath.Join(cfg.BinDir, "loupe-agent")
	defer func() {
		if err := bl.lab.RestartAgent(context.WithoutCancel(ctx), agentBin, node.Name); err != nil {
			cfg.Log.Warn("otlp keep-up: restore agent", "err", err)
		}
	}()
	flags := []string{"--otlp-endpoint", recv.Addr(), "--otlp-insecure", "--otlp-flows", "raw"}
	if cfg.Profile {
		flags = append(flags, "--pprof-listen", net.JoinHostPort(node.IP, pprofPort))
	}
	if err := bl.lab.RestartAgent(ctx, agentBin, node.Name, flags...); err != nil {
		return nil, err
	}
	src, pid, url, err := eventRig(bl)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dur := pick(cfg, 5*time.Second, 2*time.Second, 500*time.Millisecond)
	// The agent was just restarted: its first seconds grow its heap (the
	// ring's 65,535 flows, the exporter's queue) and fault pages in. An
	// uncounted round as long as a measured one, as the compare rounds
	// have, so that the rounds measure an agent in its steady state, as
	// the main events rounds do.
	if _, err := measureEvents(ctx, src, url, pid, eventsTarget, dur); err != nil {
		return nil, err
	}
	var delivered, exported, ones []float64
	var dropped float64
	for i := range cfg.rounds() {
		n0 := recv.Count()
		r, err := measureEvents(ctx, src, url, pid, eventsTarget, dur)
		if err != nil {
			return nil, err
		}
		// The exporter batches: wait until the receiver's count stops.
		n1 := waitStill(recv.Count, 3*time.Second)
		flows := r.after.flows - r.before.flows
		// Every flow the agent made this round is either received or
		// counted dropped; the rounds' own share received is the figure.
		d := r.after.otlpDropped - r.before.otlpDropped
		dropped += d
		delivered, exported, ones = append(delivered, r.delivered), append(exported, float64(n1-n0)/max(1, flows)), append(ones, 1)
		cfg.Log.Info("otlp keep-up", "round", i+1, "offered_per_s", fmt.Sprintf("%.0f", r.offered), "events_per_s", fmt.Sprintf("%.0f", r.rate),
			"delivered", fmt.Sprintf("%.4f", r.delivered), "received", n1-n0, "export_dropped", d, "events_per_cpu_s", fmt.Sprintf("%.0f", r.perCore))
	}
	if cfg.Profile {
		// Where exporting puts the agent's CPU: otlp-agent.pprof.
		procs := []profiled{{"otlp-agent", net.JoinHostPort(node.IP, pprofPort)}}
		if err := profileProcs(ctx, cfg, procs, func() error {
			_, err := src.drive(ctx, eventsTarget, profileSeconds*time.Second+500*time.Millisecond)
			return err
		}); err != nil {
			cfg.Log.Warn("otlp keep-up: profile", "err", err)
		}
	}
	note := fmt.Sprintf("agent exporting every flow (--otlp-flows raw) to a pdata OTLP receiver in a process at nice 19 (a collector's CPU is elsewhere), events from the event source at 200k/s offered; %.0f export drops counted", dropped)
	del, err := NewRow("otlp_keepup_delivered", "fraction", delivered, ones, "all events", 1, Higher, note+": flows out of flows + lost events")
	if err != nil {
		return nil, err
	}
	exp, err := NewRow("otlp_keepup_exported", "fraction", exported, ones, "every flow made", 1, Higher, "log records the receiver got out of the flows the agent made in the round; the receiver at nice 19 takes only CPU the node leaves idle, and the rest are the exporter's counted drops")
	if err != nil {
		return []Row{del}, err
	}
	return []Row{del, exp}, nil
}

// waitStill polls count until it stays the same for 300 ms, or max passes.
func waitStill(count func() int, max time.Duration) int {
	end := time.Now().Add(max)
	last := count()
	for time.Now().Before(end) {
		time.Sleep(300 * time.Millisecond)
		n := count()
		if n == last {
			return n
		}
		last = n
	}
	return last
}
