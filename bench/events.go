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
	// The on-disk history (#20): flows that missed it, and records written.
	histLost, histWritten float64
	l7HTTP                float64 // HTTP L7 flows (the l7http suite)
	cpuTicks              uint64  // utime + stime
}

// runEvents drives many short TCP connections between two pods of node 1
// and measures what that node's agent turns into flows: events/s, lost
// events, CPU and RSS.
func runEvents(ctx context.Context, cfg *Config, bl *benchLab) ([]Row, error) {
	c1, s1 := bl.pods["c1"], bl.pods["s1"]
	node := c1.Node
	pid, err := agentPID(bl.lab.AgentPIDFile(node.Name))
	if err != nil {
		return nil, err
	}
	srv, err := startRRServer(s1.Netns, eventsPort)
	if err != nil {
		return nil, err
	}
	defer srv.stop()
	metricsURL := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(node.IP, "9962"))
	dur := pick(cfg, 5*time.Second, 2*time.Second, 500*time.Millisecond)
	var rates, delivered, cpu, conns, perCore, toHistory []float64
	var histLost, histWritten float64
	var rss float64
	for r := range cfg.rounds() {
		before, err := readAgent(ctx, metricsURL, pid)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		n, err := shortConns(ctx, c1.Netns, s1.IP, eventsPort, 8, dur)
		if err != nil {
			return nil, err
		}
		// The agent reads its ring buffer asynchronously: wait until its
		// flow count stops moving before reading the end figures.
		after, err := settle(ctx, metricsURL, pid)
		if err != nil {
			return nil, err
		}
		el := time.Since(t0).Seconds()
		gen := dur.Seconds()
		events := after.flows - before.flows
		lost := after.lost - before.lost
		rates = append(rates, events/gen)
		delivered = append(delivered, events/max(1, events+lost))
		hl := after.histLost - before.histLost
		histLost += hl
		histWritten += after.histWritten - before.histWritten
		toHistory = append(toHistory, (events-hl)/max(1, events+lost))
		cpu = append(cpu, float64(after.cpuTicks-before.cpuTicks)/100/el)
		conns = append(conns, float64(n)/gen)
		if cs := float64(after.cpuTicks-before.cpuTicks) / 100; cs > 0 {
			perCore = append(perCore, events/cs)
		}
		rss = max(rss, rssMB(pid))
		cfg.Log.Info("events", "round", r+1, "events_per_s", fmt.Sprintf("%.0f", events/gen), "lost", lost,
			"conns_per_s", fmt.Sprintf("%.0f", float64(n)/gen), "agent_cpu_cores", fmt.Sprintf("%.2f", cpu[r]))
	}
	note := fmt.Sprintf("short TCP connections c1->s1 on one node at %.0f conn/s (the in-process generator is the limit), 0 lost wanted; agent CPU %.2f cores, RSS %.0f MB (peak %.0f MB)",
		Median(conns), Median(cpu), rss, hwmMB(pid))
	targets := make([]float64, len(rates))
	ones := make([]float64, len(rates))
	for i := range targets {
		targets[i], ones[i] = eventsTarget, 1
	}
	rate, err := NewRow("events_rate", "events/s", rates, targets, "target 200k/s", 1, Higher, note)
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
		fmt.Sprintf("with history on (the agent's default), the events_rate traffic: flows written to the on-disk history out of flows + lost events, 0 lost wanted; %.0f history records written, %.0f flows missed the history, events lost as in events_delivered",
			histWritten, histLost))
	if err != nil {
		return rows, err
	}
	rows = append(rows, hist)
	if pc, err := NewRow("events_per_agent_core", "events/cpu-s", perCore, targets[:len(perCore)], "target 200k/s", 1, Higher,
		"events the agent turns into flows per second of its own CPU: what one agent core would sustain"); err == nil {
		rows = append(rows, pc)
	}
	return rows, nil
}

// shortConns opens connections from netns to ip:port with workers in
// parallel for d: connect, one byte each way, close. It returns how many
// completed.
func shortConns(ctx context.Context, netns, ip string, port, workers int, d time.Duration) (int64, error) {
	var n atomic.Int64
	var firstErr error
	var once sync.Once
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	for range workers {
		wg.Go(func() {
			// The dialer's socket must be made inside the pod netns; one
			// OS thread per worker stays there for the whole run.
			err := inNetns(netns, func() error {
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
			if err != nil {
				once.Do(func() { firstErr = err })
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return n.Load(), fmt.Errorf("events traffic: %w", firstErr)
	}
	return n.Load(), ctx.Err()
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
