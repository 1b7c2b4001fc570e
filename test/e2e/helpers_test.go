package e2e

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/encoding/protojson"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"

	"github.com/loupe-project/loupe/lab"
)

// conn is one connection the test made, with its exact 5-tuple.
type conn struct {
	proto            string // TCP or UDP
	src, dst         lab.PodStatus
	srcPort, dstPort uint32
	sent             time.Time
}

func (k conn) String() string {
	return fmt.Sprintf("%s/%s:%d -> %s/%s:%d %s", k.src.Namespace, k.src.Name, k.srcPort, k.dst.Namespace, k.dst.Name, k.dstPort, k.proto)
}

// netnsPath is the bind mount of a lab pod's netns.
func (c *cluster) netnsPath(p lab.PodStatus) string {
	return filepath.Join("/run/netns", c.name+"-"+p.Namespace+"."+p.Name)
}

// dial makes one connection from pod src to dst:port inside src's netns: a
// TCP connection that sends a line and is closed, or one UDP datagram. It
// returns the 5-tuple the kernel chose.
func (c *cluster) dial(t *testing.T, proto string, src, dst lab.PodStatus, port int) conn {
	t.Helper()
	network := map[string]string{"TCP": "tcp4", "UDP": "udp4"}[proto]
	addr := net.JoinHostPort(dst.IP, strconv.Itoa(port))
	var nc net.Conn
	sent := time.Now()
	err := ns.WithNetNSPath(c.netnsPath(src), func(ns.NetNS) error {
		var err error
		nc, err = net.DialTimeout(network, addr, 3*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial %s %s from %s/%s: %v", proto, addr, src.Namespace, src.Name, err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("loupe-e2e\n")); err != nil {
		t.Fatalf("write %s %s: %v", proto, addr, err)
	}
	if proto == "TCP" {
		// Read the answer (the pod servers echo or answer HTTP) so the
		// connection completes both ways before it closes.
		_ = nc.SetReadDeadline(time.Now().Add(3 * time.Second))
		_, _ = bufio.NewReader(nc).ReadString('\n')
	}
	_, portStr, _ := net.SplitHostPort(nc.LocalAddr().String())
	sp, _ := strconv.Atoi(portStr)
	return conn{proto: proto, src: src, dst: dst, srcPort: uint32(sp), dstPort: uint32(port), sent: sent}
}

// spoof sends one UDP datagram with a forged source address from inside pod
// src's netns, through a raw socket on a locked thread.
func (c *cluster) spoof(t *testing.T, src lab.PodStatus, forged netip.Addr, dst lab.PodStatus, sport, dport uint16) time.Time {
	t.Helper()
	d4 := netip.MustParseAddr(dst.IP).As4()
	s4 := forged.As4()
	payload := []byte("loupe-e2e-forged")
	pkt := make([]byte, 20+8+len(payload))
	pkt[0] = 0x45
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	pkt[8] = 64
	pkt[9] = unix.IPPROTO_UDP
	copy(pkt[12:16], s4[:])
	copy(pkt[16:20], d4[:])
	binary.BigEndian.PutUint16(pkt[10:], ipChecksum(pkt[:20]))
	binary.BigEndian.PutUint16(pkt[20:], sport)
	binary.BigEndian.PutUint16(pkt[22:], dport)
	binary.BigEndian.PutUint16(pkt[24:], uint16(8+len(payload)))
	copy(pkt[28:], payload)
	sent := time.Now()
	err := ns.WithNetNSPath(c.netnsPath(src), func(ns.NetNS) error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			return fmt.Errorf("raw socket: %w", err)
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, pkt, 0, &unix.SockaddrInet4{Addr: d4})
	})
	if err != nil {
		t.Fatalf("send forged packet from %s/%s: %v", src.Namespace, src.Name, err)
	}
	return sent
}

func ipChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(b[i])<<8 | uint32(b[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// parseFlows reads `-o json` output: one GetFlowsResponse a line.
func parseFlows(t *testing.T, out string) []*observerpb.GetFlowsResponse {
	t.Helper()
	var res []*observerpb.GetFlowsResponse
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		r := &observerpb.GetFlowsResponse{}
		if err := protojson.Unmarshal([]byte(line), r); err != nil {
			t.Fatalf("parse %q: %v", line, err)
		}
		res = append(res, r)
	}
	return res
}

// flowsOf keeps the flows of responses.
func flowsOf(res []*observerpb.GetFlowsResponse) []*flowpb.Flow {
	var fs []*flowpb.Flow
	for _, r := range res {
		if f := r.GetFlow(); f != nil {
			fs = append(fs, f)
		}
	}
	return fs
}

// observe runs `loupe observe --server server -o json args...` and returns its flows.
func (c *cluster) observe(t *testing.T, server string, args ...string) []*flowpb.Flow {
	t.Helper()
	out := c.mustLoupe(t, append([]string{"observe", "--server", server, "-o", "json"}, args...)...)
	return flowsOf(parseFlows(t, out))
}

// ports returns a flow's L4 protocol and ports.
func ports(f *flowpb.Flow) (proto string, sport, dport uint32) {
	switch l4 := f.GetL4().GetProtocol().(type) {
	case *flowpb.Layer4_TCP:
		return "TCP", l4.TCP.GetSourcePort(), l4.TCP.GetDestinationPort()
	case *flowpb.Layer4_UDP:
		return "UDP", l4.UDP.GetSourcePort(), l4.UDP.GetDestinationPort()
	case *flowpb.Layer4_ICMPv4:
		return "ICMPv4", 0, 0
	case *flowpb.Layer4_ICMPv6:
		return "ICMPv6", 0, 0
	}
	return "", 0, 0
}

// of reports whether f belongs to k, in either direction.
func (k conn) of(f *flowpb.Flow) bool {
	proto, sp, dp := ports(f)
	if proto != k.proto {
		return false
	}
	s, d := f.GetIP().GetSource(), f.GetIP().GetDestination()
	return s == k.src.IP && d == k.dst.IP && sp == k.srcPort && dp == k.dstPort ||
		s == k.dst.IP && d == k.src.IP && sp == k.dstPort && dp == k.srcPort
}

// forward reports whether f is k's original direction.
func (k conn) forward(f *flowpb.Flow) bool {
	_, sp, _ := ports(f)
	return k.of(f) && f.GetIP().GetSource() == k.src.IP && sp == k.srcPort
}

func (k conn) matching(fs []*flowpb.Flow) []*flowpb.Flow {
	var out []*flowpb.Flow
	for _, f := range fs {
		if k.of(f) {
			out = append(out, f)
		}
	}
	return out
}

func describe(f *flowpb.Flow) string {
	proto, sp, dp := ports(f)
	return fmt.Sprintf("%s %s %s:%d -> %s:%d %s %s/%s -> %s/%s node=%s %s",
		f.GetTime().AsTime().Format(time.RFC3339Nano), proto, f.GetIP().GetSource(), sp, f.GetIP().GetDestination(), dp,
		f.GetVerdict(), f.GetSource().GetNamespace(), f.GetSource().GetPodName(),
		f.GetDestination().GetNamespace(), f.GetDestination().GetPodName(), f.GetNodeName(), f.GetTraceObservationPoint())
}

func describeAll(fs []*flowpb.Flow) string {
	var b strings.Builder
	for _, f := range fs {
		b.WriteString("  " + describe(f) + "\n")
	}
	return b.String()
}

// poll calls fn until it returns nil or timeout passes, and returns its last error.
func poll(timeout, every time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(every)
	}
}

// follower is a running `loupe observe -f -o json` whose stdout and stderr
// lines arrive on channels, each stamped with when the test read it.
type follower struct {
	cmd    *exec.Cmd
	flows  chan followed
	notes  chan followed
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

type followed struct {
	res  *observerpb.GetFlowsResponse
	read time.Time
	raw  string
}

func (c *cluster) follow(t *testing.T, server string, args ...string) *follower {
	t.Helper()
	return followCmd(t, nil, filepath.Join(c.bin, "loupe"), append([]string{"observe", "--server", server, "-o", "json", "-f"}, args...)...)
}

// followCmd runs a follower (env nil: the test's environment).
func followCmd(t *testing.T, env []string, bin string, args ...string) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 5 * time.Second
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	fl := &follower{cmd: cmd, flows: make(chan followed, 100000), notes: make(chan followed, 1000), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	read := func(r io.Reader, ch chan followed, keep bool) {
		defer wg.Done()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			now := time.Now()
			line := sc.Text()
			if keep {
				fl.mu.Lock()
				fl.stderr.WriteString(line + "\n")
				fl.mu.Unlock()
			}
			r := &observerpb.GetFlowsResponse{}
			if protojson.Unmarshal([]byte(line), r) != nil {
				r = nil
			}
			select {
			case ch <- followed{res: r, read: now, raw: line}:
			default:
			}
		}
	}
	wg.Add(2)
	go read(stdout, fl.flows, false)
	go read(stderr, fl.notes, true)
	go func() {
		wg.Wait()
		_ = cmd.Wait()
		close(fl.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-fl.done
	})
	return fl
}

// await returns the first flow line for which match is true, or fails after timeout.
func (fl *follower) await(t *testing.T, timeout time.Duration, what string, match func(*flowpb.Flow) bool) followed {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case l := <-fl.flows:
			if l.res.GetFlow() != nil && match(l.res.GetFlow()) {
				return l
			}
		case <-fl.done:
			t.Fatalf("loupe observe -f exited while waiting for %s; stderr:\n%s", what, fl.stderrText())
		case <-timer.C:
			t.Fatalf("no %s within %s; stderr of loupe observe -f:\n%s", what, timeout, fl.stderrText())
		}
	}
}

func (fl *follower) stderrText() string {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	return fl.stderr.String()
}

// live makes connections until the follower shows one, so that what the
// test does next happens while the stream is known to be flowing.
func (c *cluster) live(t *testing.T, fl *follower, src, dst lab.PodStatus) {
	t.Helper()
	// A relay holds flows in its sort window, so any warm-up flow counts,
	// and the pauses grow: the stock Hubble Relay drains its window only
	// after a second without new flows.
	var sent []conn
	deadline := time.Now().Add(20 * time.Second)
	pause := 500 * time.Millisecond
	for time.Now().Before(deadline) {
		sent = append(sent, c.dial(t, "UDP", src, dst, 81))
		timer := time.NewTimer(pause)
		pause = min(2*pause, 4*time.Second)
	wait:
		for {
			select {
			case l := <-fl.flows:
				for _, k := range sent {
					if k.of(l.res.GetFlow()) {
						timer.Stop()
						return
					}
				}
			case <-timer.C:
				break wait
			}
		}
	}
	t.Fatalf("loupe observe -f showed none of the warm-up flows within 20s; stderr:\n%s", fl.stderrText())
}

// quiet waits until the agents' flow counts stop moving, so that two
// commands run one after the other see the same buffers.
func (c *cluster) quiet(t *testing.T) {
	t.Helper()
	seen := func() string {
		var b strings.Builder
		for _, n := range c.nodeNames() {
			out, _, _ := c.loupe("status", "--server", c.nodes[n].ObserverAddress, "-o", "json")
			var st struct {
				Status struct {
					SeenFlows string `json:"seen_flows"`
				} `json:"status"`
			}
			_ = json.Unmarshal([]byte(out), &st)
			b.WriteString(n + "=" + st.Status.SeenFlows + " ")
		}
		return b.String()
	}
	prev := seen()
	err := poll(10*time.Second, 300*time.Millisecond, func() error {
		cur := seen()
		if cur != prev {
			prev = cur
			return fmt.Errorf("flows still arriving")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the agents never went quiet: %v", err)
	}
}
