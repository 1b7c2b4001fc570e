package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"
)

const (
	l7HTTPPort = 7080
	// l7HTTPTarget is issue #16's bar: HTTP requests/s with L7 on at
	// least 0.9x the same datapath with --l7=off.
	l7HTTPTarget = 0.9
	// l7HTTPCPUBudget is loupe's own budget (the issue names none): agent
	// cores per 1,000 HTTP requests/s with L7 on, i.e. one core for 20k
	// req/s, two L7 flows each. Documented in docs/benchmarks.md.
	l7HTTPCPUBudget = 0.05
	l7HTTPWorkers   = 8
	// l7HTTPRateLimit is the L7 records/s the agent under test may send:
	// each request makes four (request and response, at both pods' veths).
	l7HTTPRateLimit = 1_000_000
)

// runL7HTTP drives keep-alive HTTP/1.1 requests from c1 to s1 (one node)
// with node 1's agent at its default (--l7=dns,http) and restarted with
// --l7=off, alternating in each round, and reads the agent's CPU and L7
// flows around each run: the HTTP request rate with L7 on vs off, and the
// agent's CPU per 1,000 requests/s.
func runL7HTTP(ctx context.Context, cfg *Config, bl *benchLab) (rows []Row, err error) {
	c1, s1 := bl.pods["c1"], bl.pods["s1"]
	node := c1.Node
	agentBin := filepath.Join(cfg.BinDir, "loupe-agent")
	defer func() {
		if rerr := bl.lab.RestartAgent(context.WithoutCancel(ctx), agentBin, node.Name); rerr != nil {
			err = errors.Join(err, fmt.Errorf("restore node 1's agent: %w", rerr))
		}
	}()
	srv, err := startHTTPServer(s1.Netns, l7HTTPPort)
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	metricsURL := fmt.Sprintf("http://%s/metrics", net.JoinHostPort(node.IP, "9962"))
	dur := pick(cfg, 5*time.Second, 2*time.Second, 500*time.Millisecond)
	var on, off, cpuPer1k, cpuOffPer1k []float64
	var l7Flows, lost float64
	for r := range cfg.rounds() {
		// Alternate which setting goes first, so drift hits both alike.
		order := []bool{true, false}
		if r%2 == 1 {
			order = []bool{false, true}
		}
		for _, l7 := range order {
			// With L7 on, a rate limit above the load, so that every
			// exchange is parsed and paired: the CPU row is the full cost.
			extra := []string{"--l7-events-per-second=" + strconv.Itoa(l7HTTPRateLimit)}
			if !l7 {
				extra = []string{"--l7=off"}
			}
			if err := bl.lab.RestartAgent(ctx, agentBin, node.Name, extra...); err != nil {
				return nil, fmt.Errorf("l7 http: restart agent %v: %w", extra, err)
			}
			pid, err := agentPID(bl.lab.AgentPIDFile(node.Name))
			if err != nil {
				return nil, err
			}
			before, err := readAgent(ctx, metricsURL, pid)
			if err != nil {
				return nil, err
			}
			t0 := time.Now()
			n, err := httpLoad(ctx, c1.Netns, s1.IP, l7HTTPPort, l7HTTPWorkers, dur)
			if err != nil {
				return nil, err
			}
			rate := float64(n) / dur.Seconds()
			after, err := settle(ctx, metricsURL, pid)
			if err != nil {
				return nil, err
			}
			cores := float64(after.cpuTicks-before.cpuTicks) / 100 / time.Since(t0).Seconds()
			if l7 {
				on = append(on, rate)
				cpuPer1k = append(cpuPer1k, cores/(rate/1000))
				l7Flows += after.l7HTTP - before.l7HTTP
				lost += after.lost - before.lost
			} else {
				off = append(off, rate)
				cpuOffPer1k = append(cpuOffPer1k, cores/(rate/1000))
			}
			cfg.Log.Info("l7 http", "round", r+1, "l7", l7, "req_per_s", fmt.Sprintf("%.0f", rate),
				"agent_cores", fmt.Sprintf("%.3f", cores), "l7_flows", after.l7HTTP-before.l7HTTP)
		}
	}
	if l7Flows == 0 {
		return nil, errors.New("l7 http: the agent made no HTTP L7 flows with --l7=dns,http: the rows would measure nothing")
	}
	note := fmt.Sprintf("keep-alive HTTP/1.1 GET c1->s1 on one node, %d connections back to back; node 1's agent at --l7=dns,http --l7-events-per-second=%d vs restarted with --l7=off, alternating; %.0f HTTP L7 flows made, %.0f events lost",
		l7HTTPWorkers, l7HTTPRateLimit, l7Flows, lost)
	rate, err := NewRow("l7_http_request_rate", "req/s", on, off, "--l7=off", l7HTTPTarget, Higher, note)
	if err != nil {
		return nil, err
	}
	budget := make([]float64, len(cpuPer1k))
	for i := range budget {
		budget[i] = l7HTTPCPUBudget
	}
	cpu, err := NewRow("l7_http_agent_cpu_per_1k_rps", "cores", cpuPer1k, budget, fmt.Sprintf("budget %.2f cores", l7HTTPCPUBudget), 1, Lower,
		fmt.Sprintf("node 1's agent CPU per 1,000 HTTP requests/s with L7 on (two L7 flows per request); with --l7=off %.4f", Median(cpuOffPer1k)))
	if err != nil {
		return []Row{rate}, err
	}
	return []Row{rate, cpu}, nil
}

// startHTTPServer serves 200 "ok" to every request, inside netns.
func startHTTPServer(netns string, port int) (*http.Server, error) {
	var ln net.Listener
	err := inNetns(netns, func() error {
		var err error
		ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("http server: %w", err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "ok\n")
	})}
	go func() { _ = srv.Serve(ln) }()
	return srv, nil
}

// httpLoad sends GET requests over workers keep-alive connections from
// netns for d, each waiting for its response; it returns how many were
// answered 200.
func httpLoad(ctx context.Context, netns, ip string, port, workers int, d time.Duration) (int64, error) {
	end := time.Now().Add(d)
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	req := []byte("GET /bench/item HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: loupebench\r\n\r\n")
	return netnsWorkers(ctx, netns, workers, "http load", func(n *atomic.Int64) error {
		c, err := (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp4", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(end.Add(5 * time.Second))
		br := bufio.NewReader(c)
		for time.Now().Before(end) && ctx.Err() == nil {
			if _, err := c.Write(req); err != nil {
				return err
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			n.Add(1)
		}
		return nil
	})
}
