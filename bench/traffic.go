package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// iperfServer is an iperf3 server running in a pod's netns.
type iperfServer struct {
	cmd  *exec.Cmd
	port int
}

func startIperfServer(ctx context.Context, netns string, port int) (*iperfServer, error) {
	cmd := exec.CommandContext(context.Background(), "nsenter", "--net="+netns, "--", "iperf3", "-s", "-p", strconv.Itoa(port))
	setPdeath(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("iperf3 server: %w", err)
	}
	s := &iperfServer{cmd: cmd, port: port}
	// Ready when the port listens inside the netns.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := run(ctx, "nsenter", "--net="+netns, "--", "ss", "-Hltn", "sport = :"+strconv.Itoa(port))
		if strings.TrimSpace(out) != "" {
			return s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("iperf3 server in %s did not listen on %d", netns, port)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *iperfServer) stop() {
	if s == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Cancel()
	_ = s.cmd.Wait()
}

// iperfRun runs one single-stream TCP test from netns to ip:port for secs
// (iperf3 takes whole seconds), leaving out the first omit seconds, and
// returns the receiver's rate in Gbit/s.
func iperfRun(ctx context.Context, netns, ip string, port int, secs, omit int) (float64, error) {
	out, err := run(ctx, "nsenter", "--net="+netns, "--", "iperf3", "-c", ip, "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(secs), "-O", strconv.Itoa(omit), "-J")
	if err != nil {
		return 0, err
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if res.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", res.Error)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		return 0, errors.New("iperf3: no bytes received")
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

// rrServer answers every byte with one byte, on every connection.
type rrServer struct {
	ln   net.Listener
	wg   sync.WaitGroup
	mu   sync.Mutex
	conn map[net.Conn]bool
}

// startRRServer listens on port inside netns (the socket stays there).
func startRRServer(netns string, port int) (*rrServer, error) {
	s := &rrServer{conn: map[net.Conn]bool{}}
	err := inNetns(netns, func() error {
		var err error
		s.ln, err = net.Listen("tcp4", ":"+strconv.Itoa(port))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rr server: %w", err)
	}
	s.wg.Go(func() {
		for {
			c, err := s.ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conn[c] = true
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				buf := make([]byte, 1)
				for {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					if _, err := c.Write(buf); err != nil {
						return
					}
				}
			})
		}
	})
	return s, nil
}

func (s *rrServer) stop() {
	if s == nil {
		return
	}
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conn {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// rrResult is one request/response run.
type rrResult struct {
	TPS      float64 // transactions per second
	P50, P99 float64 // µs
}

// rrRun opens one TCP connection from netns to ip:port and does 1-byte
// request/response transactions back to back for d.
func rrRun(ctx context.Context, netns, ip string, port int, d time.Duration) (rrResult, error) {
	var c net.Conn
	err := inNetns(netns, func() error {
		var err error
		c, err = (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp4", net.JoinHostPort(ip, strconv.Itoa(port)))
		return err
	})
	if err != nil {
		return rrResult{}, fmt.Errorf("rr client: %w", err)
	}
	defer c.Close()
	buf := []byte{'x'}
	lat := make([]time.Duration, 0, 1<<18)
	// Warm up: the first transactions set up ARP and conntrack entries.
	for range 100 {
		if _, err := c.Write(buf); err != nil {
			return rrResult{}, fmt.Errorf("rr client: %w", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return rrResult{}, fmt.Errorf("rr client: %w", err)
		}
	}
	start := time.Now()
	end := start.Add(d)
	_ = c.SetDeadline(end.Add(5 * time.Second))
	for {
		t0 := time.Now()
		if !t0.Before(end) || ctx.Err() != nil {
			break
		}
		if _, err := c.Write(buf); err != nil {
			return rrResult{}, fmt.Errorf("rr client: %w", err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			return rrResult{}, fmt.Errorf("rr client: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	if len(lat) == 0 {
		return rrResult{}, errors.New("rr client: no transactions")
	}
	el := time.Since(start)
	return rrResult{
		TPS: float64(len(lat)) / el.Seconds(),
		P50: Percentile(lat, 50, time.Microsecond),
		P99: Percentile(lat, 99, time.Microsecond),
	}, nil
}
