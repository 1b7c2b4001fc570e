package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const eventsPort = 7002

// eventsTarget is the bar: events/s the agent sustains on this
// 2-core machine with none lost.
const eventsTarget = 200000

// agentCounters are the figures read from one agent around a round.
type agentCounters struct {
	flows, lost float64
	read        float64 // ring-buffer records the agent's reader took
	otlpDropped float64 // flows the OTLP exporter dropped
	// The on-disk history (#20): flows that missed it, and records written.
	histLost, histWritten float64
	l7HTTP                float64 // HTTP L7 flows (the l7http suite)
	cpuTicks              uint64  // utime + stime
}

// eventsOffered is the rate the events rounds offer: 5 % over the target,
// so a round that delivers every event measures a rate above the target
// (offering exactly the target, a perfect round measures a hair under it:
// the settle poll and the generator's last partial millisecond).
const eventsOffered = eventsTarget * 21 / 20

// eventsPressure is the offered rate of the pressure rounds, as a multiple
// of eventsTarget: the issue asks what the agent does at twice its
// sustainable rate.
const eventsPressure = 2

// runEvents writes datapath events into node 1's ring from the real TCX
// programs (eventSource) at eventsTarget per second and measures what the
// agent turns into flows: events/s, lost events, CPU and RSS. Then it offers
// eventsPressure times that and checks that every event is either a flow or
// a counted loss, and that memory stays flat.
func runEvents(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	node := bl.pods["c1"].Node
	if cfg.Profile {
		// The profiled round needs the agent's /debug/pprof; the metrics
		// cost rounds after this restart it with the lab's flags again.
		if err := bl.lab.RestartAgent(ctx, filepath.Join(cfg.BinDir, "loupe-agent"), node.Name,
			"--pprof-listen", net.JoinHostPort(node.IP, pprofPort)); err != nil {
			return nil, err
		}
	}
	src, pid, metricsURL, err := eventRig(bl)
	if err != nil {
		return nil, err
	}
	defer func() { src.Close() }() // the compare rounds open it again
	dur := pick(cfg, 5*time.Second, 2*time.Second, 500*time.Millisecond)
	// One unmeasured second warms the agent's maps and caches up.
	if _, err := src.drive(ctx, eventsTarget, pick(cfg, time.Second, time.Second, 200*time.Millisecond)); err != nil {
		return nil, err
	}
	if _, err := settle(ctx, metricsURL, pid); err != nil {
		return nil, err
	}
	measure := func(rate float64) (eventsRound, error) { return measureEvents(ctx, src, metricsURL, pid, rate, dur) }
	var rates, delivered, cpu, perCore, offered, toHistory []float64
	var histLost, histWritten float64
	for i := range cfg.rounds() {
		r, err := measure(eventsOffered)
		if err != nil {
			return nil, err
		}
		// The history writer batches (200 ms): let its last batch land
		// before counting what reached the disk.
		hafter, err := settle(ctx, metricsURL, pid)
		if err != nil {
			return nil, err
		}
		events, lost := hafter.flows-r.before.flows, hafter.lost-r.before.lost
		hl := hafter.histLost - r.before.histLost
		histLost += hl
		histWritten += hafter.histWritten - r.before.histWritten
		toHistory = append(toHistory, (events-hl)/max(1, events+lost))
		rates, delivered, cpu, offered = append(rates, r.rate), append(delivered, r.delivered), append(cpu, r.cpu), append(offered, r.offered)
		if r.perCore > 0 {
			perCore = append(perCore, r.perCore)
		}
		cfg.Log.Info("events", "round", i+1, "offered_per_s", fmt.Sprintf("%.0f", r.offered), "events_per_s", fmt.Sprintf("%.0f", r.rate),
			"delivered", fmt.Sprintf("%.4f", r.delivered), "agent_cpu_cores", fmt.Sprintf("%.2f", r.cpu), "events_per_cpu_s", fmt.Sprintf("%.0f", r.perCore),
			"source_cpu_cores", fmt.Sprintf("%.2f", r.srcCPU))
	}
	if cfg.Profile {
		before, err := readAgent(ctx, metricsURL, pid)
		if err != nil {
			return nil, err
		}
		// The relay shares the machine with the agent: its profile shows
		// what the rest of the lab costs at this rate.
		relayBin := filepath.Join(cfg.BinDir, "loupe-relay")
		relayPprof := net.JoinHostPort(bl.lab.BridgeIP().String(), relayPprofPort)
		if err := bl.lab.RestartRelay(ctx, relayBin, "--pprof-listen", relayPprof); err != nil {
			return nil, err
		}
		defer func() {
			if err := bl.lab.RestartRelay(context.WithoutCancel(ctx), relayBin); err != nil {
				cfg.Log.Warn("events: restore relay", "err", err)
			}
		}()
		procs := []profiled{{"agent", net.JoinHostPort(node.IP, pprofPort)}, {"relay", relayPprof}}
		if err := profileProcs(ctx, cfg, procs, func() error {
			_, err := src.drive(ctx, eventsTarget, profileSeconds*time.Second+500*time.Millisecond)
			return err
		}); err != nil {
			cfg.Log.Warn("events: profile", "err", err)
		}
		after, err := settle(ctx, metricsURL, pid)
		if err != nil {
			return nil, err
		}
		// What a profile's share of samples means per event: the agent's
		// CPU over the profiled round divided by the flows it made.
		if flows := after.flows - before.flows; flows > 0 {
			cfg.Log.Info("events: profiled round", "flows", flows,
				"agent_cpu_ns_per_flow", fmt.Sprintf("%.0f", float64(after.cpuTicks-before.cpuTicks)*1e7/flows))
		}
	}
	rssBefore := rssMB(pid)
	var pDelivered, pAccounted, pOffered, rssAfter []float64
	var rssBase []float64
	for i := range cfg.rounds() {
		r, err := measure(eventsPressure * eventsTarget)
		if err != nil {
			return nil, err
		}
		pDelivered, pAccounted, pOffered = append(pDelivered, r.delivered), append(pAccounted, r.accounted), append(pOffered, r.offered)
		rssAfter, rssBase = append(rssAfter, rssMB(pid)), append(rssBase, rssBefore)
		cfg.Log.Info("events pressure", "round", i+1, "offered_per_s", fmt.Sprintf("%.0f", r.offered), "events_per_s", fmt.Sprintf("%.0f", r.rate),
			"delivered", fmt.Sprintf("%.4f", r.delivered), "accounted", fmt.Sprintf("%.4f", r.accounted), "rss_mb", fmt.Sprintf("%.1f", rssAfter[i]))
	}
	note := fmt.Sprintf("events from the real TCX programs run through BPF_PROG_TEST_RUN (Repeat) on crafted SYN/RST packets of pod c1's veth, offered at %.0f/s; agent CPU %.2f cores, RSS %.0f MB (peak %.0f MB)",
		Median(offered), Median(cpu), rssBefore, hwmMB(pid))
	targets := make([]float64, len(rates))
	ones := make([]float64, len(rates))
	for i := range targets {
		targets[i], ones[i] = eventsTarget, 1
	}
	rate, err := NewRow("events_rate", "events/s", rates, targets, "target 200k/s", 1, Higher, note+
		"; the rate counts from the first event written to the last one the agent read, so it is above the target only if the agent kept up")
	if err != nil {
		return nil, err
	}
	del, err := NewRow("events_delivered", "fraction", delivered, ones, "all events", 1, Higher, "flows out of flows + lost events")
	if err != nil {
		return []Row{rate}, err
	}
	rows := []Row{rate, del}
	if histWritten == 0 {
		return rows, errors.New("events: the agent wrote nothing to its flow history: is it on (--history-retention)?")
	}
	hist, err := NewRow("history_keeps_up", "fraction", toHistory, ones, "all events", 1, Higher,
		fmt.Sprintf("with history on (the agent's default), the events_rate load: flows written to the on-disk history out of flows + lost events, 0 lost wanted; %.0f history records written, %.0f flows missed the history, events lost as in events_delivered",
			histWritten, histLost))
	if err != nil {
		return rows, err
	}
	rows = append(rows, hist)
	if pc, err := NewRow("events_per_agent_core", "events/cpu-s", perCore, targets[:len(perCore)], "target 200k/s", 1, Higher,
		"events the agent turns into flows per second of its own CPU: what one agent core would sustain"); err == nil {
		rows = append(rows, pc)
	}
	pnote := fmt.Sprintf("offered %.0f events/s (%dx the target): flows + counted lost events out of the events written", Median(pOffered), eventsPressure)
	if r, err := NewRow("events_pressure_accounted", "fraction", pAccounted, ones, "every event a flow or a counted loss", 0.99, Higher, pnote); err == nil {
		rows = append(rows, r)
	}
	if r, err := NewRow("events_pressure_delivered", "fraction", pDelivered, ones, "all events", 0, Higher,
		fmt.Sprintf("offered %.0f events/s: flows out of flows + lost events (informational: losses are expected above the sustainable rate)", Median(pOffered))); err == nil {
		rows = append(rows, r)
	}
	if r, err := NewRow("events_pressure_rss", "MB", rssAfter, rssBase, "RSS before the pressure rounds", 1.1, Lower,
		"agent RSS after each pressure round against before them: memory stays flat when events are lost"); err == nil {
		rows = append(rows, r)
	}
	if cfg.CompareAgent != "" {
		r, err := compareAgents(ctx, cfg, bl, func() (float64, error) {
			// The restarted agent may have replaced the pinned ring (its
			// build has another size): the source must run its programs,
			// which write into its ring.
			src.Close()
			if src, pid, metricsURL, err = eventRig(bl); err != nil {
				return 0, err
			}
			rd, err := measure(eventsTarget)
			return rd.perCore, err
		})
		if err != nil {
			return rows, err
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// compareAgents measures events per agent CPU-second of node 1's agent
// built from this tree against cfg.CompareAgent (another build, e.g. of
// main), restarting the agent between rounds in alternating order, so both
// see the same machine load, and warming each up with a round first. It
// leaves this tree's agent running.
func compareAgents(ctx context.Context, cfg *Config, bl *benchLab, measure func() (float64, error)) (Row, error) {
	node := bl.pods["c1"].Node.Name
	bins := map[string]string{"this": filepath.Join(cfg.BinDir, "loupe-agent"), "compare": cfg.CompareAgent}
	per := map[string][]float64{}
	defer func() {
		if err := bl.lab.RestartAgent(context.WithoutCancel(ctx), bins["this"], node); err != nil {
			cfg.Log.Warn("events compare: restore agent", "err", err)
		}
	}()
	for r := range cfg.rounds() {
		order := []string{"this", "compare"}
		if r%2 == 1 {
			order = []string{"compare", "this"}
		}
		for _, name := range order {
			if err := bl.lab.RestartAgent(ctx, bins[name], node); err != nil {
				return Row{}, err
			}
			// A fresh agent's first ring's worth of flows grows its heap
			// (page faults, collections of a small heap): a round it
			// does not count, as the main rounds' agent has had.
			if _, err := measure(); err != nil {
				return Row{}, err
			}
			v, err := measure()
			if err != nil {
				return Row{}, err
			}
			if v > 0 {
				per[name] = append(per[name], v)
			}
			cfg.Log.Info("events compare", "round", r+1, "agent", name, "events_per_cpu_s", fmt.Sprintf("%.0f", v))
		}
	}
	return NewRow("events_per_agent_core_vs_compare", "events/cpu-s", per["this"], per["compare"], "agent "+cfg.CompareAgent, 1, Higher,
		"events per agent CPU-second of this tree's agent against -compare-agent, same event source at 200k/s, agent restarted between and warmed up with an uncounted round, rounds interleaved")
}

// shortConns opens connections from netns to ip:port with workers in
// parallel for d: connect, one byte each way, close. It returns how many
// completed.
func shortConns(ctx context.Context, netns, ip string, port, workers int, d time.Duration) (int64, error) {
	end := time.Now().Add(d)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	return netnsWorkers(ctx, netns, workers, "events traffic", func(n *atomic.Int64) error {
		buf := []byte{1}
		d := net.Dialer{Timeout: 2 * time.Second}
		for time.Now().Before(end) && ctx.Err() == nil {
			c, err := d.Dial("tcp4", addr)
			if err != nil {
				return err
			}
			// RST on close: no TIME_WAIT to run out of ports, and one
			// more flag change for the datapath to report.
			_ = c.(*net.TCPConn).SetLinger(0)
			_, err = c.Write(buf)
			if err == nil {
				_, err = io.ReadFull(c, buf)
			}
			c.Close()
			if err != nil {
				return err
			}
			n.Add(1)
		}
		return nil
	})
}

// netnsWorkers runs work on workers goroutines, each on its own OS thread
// inside netns for the whole run (sockets must be made there), and returns
// the count they keep and the first error, named by what.
func netnsWorkers(ctx context.Context, netns string, workers int, what string, work func(n *atomic.Int64) error) (int64, error) {
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			if err := inNetns(netns, func() error { return work(&n) }); err != nil {
				once.Do(func() { firstErr = err })
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return n.Load(), fmt.Errorf("%s: %w", what, firstErr)
	}
	return n.Load(), ctx.Err()
}

// eventRig opens the event source on pod c1's veth (events c1 <-> s1) and
// finds node 1's agent: its pid and its metrics URL.
func eventRig(bl *benchLab) (src *eventSource, pid int, metricsURL string, err error) {
	// The server is on the other node: a packet to a pod of the same node
	// would run that pod's to-pod half in the same program (local
	// delivery) and make two events.
	c1, s2 := bl.pods["c1"], bl.pods["s2"]
	if pid, err = agentPID(bl.lab.AgentPIDFile(c1.Node.Name)); err != nil {
		return nil, 0, "", err
	}
	if src, err = newEventSource(c1, s2, eventsPort); err != nil {
		return nil, 0, "", err
	}
	return src, pid, fmt.Sprintf("http://%s/metrics", c1.Node.MetricsAddress()), nil
}

// eventsRound is what one round of the event source did to an agent.
type eventsRound struct {
	rate      float64 // flows made per second, until the agent caught up
	delivered float64 // flows out of flows + lost events
	cpu       float64 // agent CPU cores
	perCore   float64 // flows per agent CPU-second
	offered   float64 // events written per second
	srcCPU    float64 // cores of this process (the event source's test runs) while it wrote
	accounted float64 // flows + lost events out of the events written
	after     agentCounters
	before    agentCounters
}

// measureEvents offers rate events/s for d to the agent pid and waits until
// it has taken them all.
func measureEvents(ctx context.Context, src *eventSource, url string, pid int, rate float64, d time.Duration) (eventsRound, error) {
	before, err := readAgent(ctx, url, pid)
	if err != nil {
		return eventsRound{}, err
	}
	self, err := cpuTicks(os.Getpid())
	if err != nil {
		return eventsRound{}, err
	}
	t0 := time.Now()
	sent, err := src.drive(ctx, rate, d)
	if err != nil {
		return eventsRound{}, err
	}
	gen := time.Since(t0).Seconds()
	selfAfter, err := cpuTicks(os.Getpid())
	if err != nil {
		return eventsRound{}, err
	}
	after, err := settleSent(ctx, url, pid, before, sent)
	if err != nil {
		return eventsRound{}, err
	}
	el := time.Since(t0).Seconds()
	events := after.flows - before.flows
	lost := after.lost - before.lost
	cs := float64(after.cpuTicks-before.cpuTicks) / 100
	r := eventsRound{rate: events / el, delivered: events / max(1, events+lost), cpu: cs / el,
		offered: float64(sent) / gen, srcCPU: float64(selfAfter-self) / 100 / gen, accounted: (events + lost) / max(1, float64(sent)), before: before, after: after}
	if cs > 0 {
		r.perCore = events / cs
	}
	return r, nil
}

// settleSent waits until the agent's reader has taken or counted lost
// every one of sent events written since before (HandleEvent runs on the
// reader, so their flows are made too), for at most 15 s: the agent may be
// far behind on a loaded machine, and a round must not count the last
// one's events. It looks every 10 ms: the time it returns at ends the
// round's rate.
func settleSent(ctx context.Context, url string, pid int, before agentCounters, sent uint64) (agentCounters, error) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := readAgent(ctx, url, pid)
		if err != nil || c.read-before.read+c.lost-before.lost >= float64(sent) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func settle(ctx context.Context, url string, pid int) (agentCounters, error) {
	last, err := readAgent(ctx, url, pid)
	if err != nil {
		return last, err
	}
	for range 20 {
		time.Sleep(100 * time.Millisecond)
		c, err := readAgent(ctx, url, pid)
		if err != nil {
			return c, err
		}
		// The history writer batches (200 ms): wait for it too.
		if c.flows == last.flows && c.histWritten == last.histWritten {
			return c, nil
		}
		last = c
	}
	return last, nil
}

func readAgent(ctx context.Context, url string, pid int) (agentCounters, error) {
	var c agentCounters
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c, fmt.Errorf("agent metrics: %w", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var dst *float64
		switch {
		case strings.HasPrefix(line, "hubble_flows_processed_total"):
			dst = &c.flows
		case strings.HasPrefix(line, "loupe_events_lost_total"):
			dst = &c.lost
		case strings.HasPrefix(line, `loupe_datapath_events_total{outcome="read"}`):
			dst = &c.read
		case strings.HasPrefix(line, "loupe_otlp_flows_dropped_total"):
			dst = &c.otlpDropped
		case strings.HasPrefix(line, "loupe_history_lost_total"):
			dst = &c.histLost
		case strings.HasPrefix(line, "loupe_history_records_total"):
			dst = &c.histWritten
		case strings.HasPrefix(line, `loupe_l7_records_total{outcome="flow",protocol="http"}`):
			dst = &c.l7HTTP
		default:
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			*dst += v
		}
	}
	if err := sc.Err(); err != nil {
		return c, fmt.Errorf("agent metrics: %w", err)
	}
	c.cpuTicks, err = cpuTicks(pid)
	return c, err
}

func agentPID(file string) (int, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, fmt.Errorf("agent pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("agent pid %q: %w", b, err)
	}
	return pid, nil
}

// cpuTicks is utime + stime of pid, in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("agent cpu: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("agent cpu: bad /proc stat")
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, errors.New("agent cpu: short /proc stat")
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return u + st, nil
}

func statusKB(pid int, key string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, key+":") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				v, _ := strconv.ParseFloat(f[1], 64)
				return v
			}
		}
	}
	return 0
}

func rssMB(pid int) float64 { return statusKB(pid, "VmRSS") / 1024 }
func hwmMB(pid int) float64 { return statusKB(pid, "VmHWM") / 1024 }

// relayPprofPort is where the profiled round's relay serves /debug/pprof,
// on the lab's bridge.
const relayPprofPort = "6062"

// pprofPort is where a profiled agent serves /debug/pprof (--pprof-listen).
const pprofPort = "6061"

// profileSeconds is how long the profile runs: long enough that a path
// taking 2 % of the agent's CPU gets tens of samples.
const profileSeconds = 8

// profiled is a process the events suite profiles: its name (the files'
// prefix) and where it serves /debug/pprof.
type profiled struct{ name, addr string }

// profileProcs takes a CPU profile of each process at once while load
// runs, and writes each to <name>.pprof and its top entries (go tool
// pprof -top, flat then cumulative) to <name>-profile.txt in the out dir.
func profileProcs(ctx context.Context, cfg *Config, procs []profiled, load func() error) error {
	type result struct {
		b   []byte
		err error
	}
	done := make([]chan result, len(procs))
	for i, p := range procs {
		done[i] = make(chan result, 1)
		go func() {
			url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.addr, profileSeconds)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				done[i] <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err == nil && resp.StatusCode != http.StatusOK {
				err = fmt.Errorf("pprof: %s: %s", resp.Status, b)
			}
			done[i] <- result{b, err}
		}()
	}
	lerr := load()
	var errs []error
	for i, p := range procs {
		res := <-done[i]
		if res.err != nil {
			errs = append(errs, fmt.Errorf("profile %s: %w", p.name, res.err))
			continue
		}
		errs = append(errs, writeProfile(ctx, cfg, p.name, res.b))
	}
	return errors.Join(append([]error{lerr}, errs...)...)
}

// writeProfile writes one profile and its top entries.
func writeProfile(ctx context.Context, cfg *Config, name string, b []byte) error {
	prof := filepath.Join(cfg.OutDir, name+".pprof")
	if err := os.WriteFile(prof, b, 0o644); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=45", prof).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w: %s", err, out)
	}
	cum, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-cum", "-nodecount=60", prof).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w: %s", err, cum)
	}
	txt := filepath.Join(cfg.OutDir, name+"-profile.txt")
	if err := os.WriteFile(txt, append(append(out, "\n--- cumulative ---\n"...), cum...), 0o644); err != nil {
		return err
	}
	cfg.Log.Info("events: profile", "process", name, "file", txt)
	return nil
}
