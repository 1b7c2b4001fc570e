package lab

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// Faults the lab can cause on purpose, so that each kind of packet loss can
// be seen in loupe observe (docs/contracts.md, "Lab faults"). The netfilter
// rules live in the pod's own network namespace and go with it.

// faultComment marks the iptables rules a fault adds, so --remove deletes
// only those.
const faultComment = "loupe-lab-fault"

// FaultUDPClosed sends count UDP datagrams from pod from to pod to's port,
// where nothing listens: the receiving kernel drops them (NO_SOCKET). It
// returns the source port the datagrams left from.
func (l *Lab) FaultUDPClosed(ctx context.Context, from, to string, port, count int) (int, error) {
	src, dst, err := l.faultPods(from, to, port)
	if err != nil {
		return 0, err
	}
	conn, err := dialIn(ctx, src.netnsPath(), "udp4", net.JoinHostPort(dst.IP, strconv.Itoa(port)), time.Second)
	if err != nil {
		return 0, fmt.Errorf("udp socket in %s: %w", from, err)
	}
	defer conn.Close()
	for range max(count, 1) {
		if _, err := conn.Write([]byte("loupe-lab-fault")); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			return 0, fmt.Errorf("send: %w", err)
		}
	}
	return conn.LocalAddr().(*net.UDPAddr).Port, nil
}

// FaultTCPClosed connects from pod from to pod to's port, where nothing
// listens: the receiving kernel drops the SYN (NO_SOCKET) and answers with
// a reset. It returns the source port and whether the connection was
// refused, as it should be.
func (l *Lab) FaultTCPClosed(ctx context.Context, from, to string, port int) (int, bool, error) {
	src, dst, err := l.faultPods(from, to, port)
	if err != nil {
		return 0, false, err
	}
	// A port of its own, so the caller can tell its reset from others'.
	sport := 20000 + rand.IntN(40000)
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src.IP), Port: sport}}
	var conn net.Conn
	err = ns.WithNetNSPath(src.netnsPath(), func(ns.NetNS) error {
		var derr error
		conn, derr = d.DialContext(ctx, "tcp4", net.JoinHostPort(dst.IP, strconv.Itoa(port)))
		return derr
	})
	if err == nil {
		conn.Close()
		return sport, false, nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return sport, true, nil
	}
	return sport, false, fmt.Errorf("connect: %w", err)
}

func (l *Lab) faultPods(from, to string, port int) (podRecord, podRecord, error) {
	if port < 1 || port > 65535 {
		return podRecord{}, podRecord{}, fmt.Errorf("port %d: want 1-65535", port)
	}
	src, err := l.findPod(from)
	if err != nil {
		return src, podRecord{}, err
	}
	dst, err := l.findPod(to)
	return src, dst, err
}

// FaultRule is an iptables rule a fault puts in a pod's INPUT chain.
type FaultRule struct {
	Pod     string
	Proto   string  // tcp or udp; "" for any
	Port    int     // destination port; 0 for any
	Percent float64 // 0: drop every match; else drop this share at random (iptables statistic)
}

func (r FaultRule) args() ([]string, error) {
	var a []string
	p := strings.ToLower(r.Proto)
	switch p {
	case "", "tcp", "udp":
	default:
		return nil, fmt.Errorf("protocol %q: want tcp or udp", r.Proto)
	}
	if p != "" {
		a = append(a, "-p", p)
	}
	if r.Port != 0 {
		if p == "" {
			return nil, errors.New("a port needs --protocol tcp or udp")
		}
		if r.Port < 1 || r.Port > 65535 {
			return nil, fmt.Errorf("port %d: want 1-65535", r.Port)
		}
		a = append(a, "--dport", strconv.Itoa(r.Port))
	}
	if r.Percent != 0 {
		if r.Percent < 0 || r.Percent > 100 {
			return nil, fmt.Errorf("percent %v: want 0-100", r.Percent)
		}
		a = append(a, "-m", "statistic", "--mode", "random", "--probability", strconv.FormatFloat(r.Percent/100, 'f', -1, 64))
	}
	return append(a, "-m", "comment", "--comment", faultComment, "-j", "DROP"), nil
}

// AddFaultRule inserts a DROP rule in the pod's INPUT chain: packets to the
// pod matching it are dropped by netfilter (NETFILTER_DROP), all of them or
// a random share (packet loss that forces TCP retransmissions).
func (l *Lab) AddFaultRule(ctx context.Context, r FaultRule) error {
	return l.iptables(ctx, r, "-I")
}

// RemoveFaultRule deletes a rule AddFaultRule added; a missing one is fine.
func (l *Lab) RemoveFaultRule(ctx context.Context, r FaultRule) error {
	err := l.iptables(ctx, r, "-D")
	if err != nil && strings.Contains(err.Error(), "does a matching rule exist") {
		return nil
	}
	return err
}

func (l *Lab) iptables(ctx context.Context, r FaultRule, op string) error {
	rec, err := l.findPod(r.Pod)
	if err != nil {
		return err
	}
	rule, err := r.args()
	if err != nil {
		return err
	}
	args := append([]string{"--net=" + rec.netnsPath(), "--", "iptables", "-w", op, "INPUT"}, rule...)
	out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s in %s: %w: %s", op, r.Pod, err, strings.TrimSpace(string(out)))
	}
	return nil
}
