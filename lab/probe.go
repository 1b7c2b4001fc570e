package lab

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"golang.org/x/net/dns/dnsmessage"
	"io"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
)

// udpResend is how often a UDP probe repeats its datagram.
const udpResend = 200 * time.Millisecond

// probeDNSName is what a probe of a DNS port asks: any answer, here
// NXDOMAIN, shows the port is reachable.
const probeDNSName = "loupe-probe.lab."

// ProbeResult is one line of `loupe lab probe --all -o json`.
type ProbeResult struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	Allowed  bool   `json:"allowed"`
}

// findPod returns the record of "ns/name" (or "name" in default).
func (l *Lab) findPod(id string) (podRecord, error) {
	namespace, name, ok := strings.Cut(id, "/")
	if !ok {
		namespace, name = "default", id
	}
	rec, found, err := l.loadRecord(namespace, name)
	if err != nil {
		return rec, err
	}
	if !found || rec.IP == "" {
		return rec, fmt.Errorf("pod %s/%s not found in the lab", namespace, name)
	}
	return rec, nil
}

// dialIn opens a socket inside a netns; the connection works from any thread after.
func dialIn(ctx context.Context, netnsPath, network, addr string, timeout time.Duration) (net.Conn, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		d := net.Dialer{Timeout: timeout}
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// probe reports whether from reaches ip:port over proto within timeout: a TCP
// connection that carries a request and its answer, or a UDP echo.
// The port's declared name picks the protocol spoken, as the server picks it.
func probe(ctx context.Context, fromNetNS string, ip string, p portSpec, timeout time.Duration) bool {
	return probeAs(ctx, fromNetNS, ip, p, p, timeout)
}

// probeAs is probe dialing port p but speaking the protocol of speak:
// through a Service, what the backends' target port serves.
func probeAs(ctx context.Context, fromNetNS string, ip string, p, speak portSpec, timeout time.Duration) bool {
	port, proto := p.Port, p.Proto
	deadline := time.Now().Add(timeout)
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	switch strings.ToUpper(proto) {
	case "TCP":
		conn, err := dialIn(ctx, fromNetNS, "tcp4", addr, timeout)
		if err != nil {
			return false
		}
		defer conn.Close()
		_ = conn.SetDeadline(deadline)
		if isDNSPort(speak.Port) {
			_, _, err := dnsAsk(conn, true, probeDNSName, dnsmessage.TypeA, deadline)
			return err == nil
		}
		if isHTTPPort(speak) {
			fmt.Fprintf(conn, "GET /probe HTTP/1.0\r\nHost: %s\r\n\r\n", ip)
			line, err := bufio.NewReader(conn).ReadString('\n')
			return err == nil && strings.HasPrefix(line, "HTTP/1.")
		}
		msg := []byte("loupe-probe\n")
		if _, err := conn.Write(msg); err != nil {
			return false
		}
		got := make([]byte, len(msg))
		_, err = io.ReadFull(conn, got)
		return err == nil && bytes.Equal(got, msg)
	case "UDP":
		conn, err := dialIn(ctx, fromNetNS, "udp4", addr, timeout)
		if err != nil {
			return false
		}
		defer conn.Close()
		if isDNSPort(speak.Port) {
			_, _, err := dnsAsk(conn, false, probeDNSName, dnsmessage.TypeA, deadline)
			return err == nil
		}
		msg := []byte(fmt.Sprintf("loupe-probe %d", time.Now().UnixNano()))
		buf := make([]byte, 2048)
		for time.Now().Before(deadline) {
			if _, err := conn.Write(msg); err != nil {
				// An ICMP error from an earlier datagram; keep trying until the deadline.
				wait := time.Until(deadline)
				if wait > udpResend {
					wait = udpResend
				}
				select {
				case <-ctx.Done():
					return false
				case <-time.After(wait):
				}
				continue
			}
			next := time.Now().Add(udpResend)
			if next.After(deadline) {
				next = deadline
			}
			_ = conn.SetReadDeadline(next)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					break
				}
				if bytes.Equal(buf[:n], msg) {
					return true
				}
			}
		}
		return false
	}
	return false
}

// Probe checks one connection between two lab pods.
func (l *Lab) Probe(ctx context.Context, from, to string, port int, proto string, timeout time.Duration) (bool, error) {
	src, err := l.findPod(from)
	if err != nil {
		return false, err
	}
	proto = strings.ToUpper(proto)
	if strings.HasPrefix(to, "svc/") {
		ip, speak, err := l.serviceTarget(to, port, proto)
		if err != nil {
			return false, err
		}
		return probeAs(ctx, src.netnsPath(), ip, portSpec{Port: port, Proto: proto}, speak, timeout), nil
	}
	var ip string
	var dst podRecord
	if a, perr := netip.ParseAddr(to); perr == nil {
		ip = a.String()
		if recs, err := l.records(); err == nil {
			for _, r := range recs {
				if r.IP == ip {
					dst = r
				}
			}
		}
	} else {
		dst, err = l.findPod(to)
		if err != nil {
			return false, err
		}
		ip = dst.IP
	}
	proto = strings.ToUpper(proto)
	if proto != "TCP" && proto != "UDP" {
		return false, fmt.Errorf("protocol %q: want TCP or UDP", proto)
	}
	if port < 1 || port > 65535 {
		return false, fmt.Errorf("port %d: want 1-65535", port)
	}
	return probe(ctx, src.netnsPath(), ip, declaredPort(dst, port, proto), timeout), nil
}

// declaredPort is port/proto with the name rec declares for it, if any.
func declaredPort(rec podRecord, port int, proto string) portSpec {
	ps, _ := parsePorts(strings.Join(rec.Ports, ","))
	for _, p := range ps {
		if p.Port == port && p.Proto == proto {
			return p
		}
	}
	return portSpec{Port: port, Proto: proto}
}

// ProbeAll probes every ordered pair of distinct pods on every port and
// protocol the destination declares, concurrently, sorted by from, to, port, protocol.
func (l *Lab) ProbeAll(ctx context.Context, timeout time.Duration, parallel int) ([]ProbeResult, error) {
	recs, err := l.records()
	if err != nil {
		return nil, err
	}
	type job struct {
		src, dst podRecord
		port     portSpec
	}
	var jobs []job
	for _, src := range recs {
		if src.IP == "" {
			continue
		}
		for _, dst := range recs {
			if dst.IP == "" || src.Namespace == dst.Namespace && src.Name == dst.Name {
				continue
			}
			ports, err := parsePorts(strings.Join(dst.Ports, ","))
			if err != nil {
				return nil, fmt.Errorf("pod %s/%s: %w", dst.Namespace, dst.Name, err)
			}
			for _, p := range ports {
				jobs = append(jobs, job{src, dst, p})
			}
		}
	}
	results := make([]ProbeResult, len(jobs))
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i] = ProbeResult{
				From: j.src.Namespace + "/" + j.src.Name, To: j.dst.Namespace + "/" + j.dst.Name,
				Port: j.port.Port, Protocol: j.port.Proto,
				Allowed: probe(ctx, j.src.netnsPath(), j.dst.IP, j.port, timeout),
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Slice(results, func(a, b int) bool {
		x, y := results[a], results[b]
		if x.From != y.From {
			return x.From < y.From
		}
		if x.To != y.To {
			return x.To < y.To
		}
		if x.Port != y.Port {
			return x.Port < y.Port
		}
		return x.Protocol < y.Protocol
	})
	return results, nil
}

// printTruthTable prints results as one matrix per port/protocol, like the
// Kubernetes netpol e2e suite: rows are sources, "." reached, "X" did not.
func printTruthTable(w io.Writer, results []ProbeResult) {
	type key struct {
		port  int
		proto string
	}
	byPort := map[key]map[[2]string]bool{}
	podSet := map[string]bool{}
	for _, r := range results {
		k := key{r.Port, r.Protocol}
		if byPort[k] == nil {
			byPort[k] = map[[2]string]bool{}
		}
		byPort[k][[2]string{r.From, r.To}] = r.Allowed
		podSet[r.From], podSet[r.To] = true, true
	}
	var keys []key
	for k := range byPort {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].port != keys[j].port {
			return keys[i].port < keys[j].port
		}
		return keys[i].proto < keys[j].proto
	})
	var pods []string
	for p := range podSet {
		pods = append(pods, p)
	}
	sort.Strings(pods)
	width := 4
	for _, p := range pods {
		if len(p) > width {
			width = len(p)
		}
	}
	for _, k := range keys {
		fmt.Fprintf(w, "%d/%s\n%-*s", k.port, k.proto, width+1, "")
		for _, p := range pods {
			fmt.Fprintf(w, " %-*s", width, p)
		}
		fmt.Fprintln(w)
		for _, from := range pods {
			fmt.Fprintf(w, "%-*s", width+1, from)
			for _, to := range pods {
				c := "-"
				if v, ok := byPort[k][[2]string{from, to}]; ok {
					c = "X"
					if v {
						c = "."
					}
				}
				fmt.Fprintf(w, " %-*s", width, c)
			}
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w)
	}
}
