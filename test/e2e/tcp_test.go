package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/testtools"
)

func tcpEvent(f *flowpb.Flow) string {
	return contract.TCPEvent(f)[contract.ExtTCPEvent].GetStringValue()
}

// tcpEventsOnce returns the TCP events of kind that match on node's agent,
// waiting up to 2 s for at least one, and checks that no other agent
// reports any of them.
func (c *cluster) tcpEventsOnce(t *testing.T, node, kind string, since time.Time, match func(*flowpb.Flow) bool) []*flowpb.Flow {
	t.Helper()
	s := since.Add(-time.Second).UTC().Format(time.RFC3339Nano)
	pick := func(fs []*flowpb.Flow) []*flowpb.Flow {
		var out []*flowpb.Flow
		for _, f := range fs {
			if tcpEvent(f) == kind && match(f) {
				out = append(out, f)
			}
		}
		return out
	}
	var got []*flowpb.Flow
	if err := poll(2*time.Second, 100*time.Millisecond, func() error {
		got = pick(c.observe(t, c.agent(t, node), "--since", s, "--tcp-event", kind))
		if len(got) == 0 {
			return fmt.Errorf("no %s on %s within 2s", kind, node)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodeNames() {
		if n == node {
			continue
		}
		if fs := pick(c.observe(t, c.agent(t, n), "--since", s, "--tcp-events")); len(fs) > 0 {
			t.Errorf("agent of %s also reported %s:\n%s", n, kind, describeAll(fs))
		}
	}
	return got
}

var ssRetrans = regexp.MustCompile(`retrans:\d+/(\d+)`)

// TCP health on a live lab: a connect to a closed port shows a reset sent
// (reason NO_SOCKET) against the server pod and a reset received against
// the client; random loss on the receiver's path makes the sender
// retransmit, and loupe's count for that connection is within 10% of the
// sender's ss -ti. Each is shown within 2 s by one agent only.
func TestPrivilegedLabTCPHealth(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	src, dst := c.podsOn(names[0])[0], c.podsOn(names[1])[0]
	from, to := src.Namespace+"/"+src.Name, dst.Namespace+"/"+dst.Name

	t.Run("reset", func(t *testing.T) {
		at := time.Now()
		out := c.mustLab(t, "fault", "tcp-closed", "--from", from, "--to", to, "--port", "7")
		// "TCP x/a:PORT -> x/b:7 refused (reset)"
		var sp uint32
		for _, w := range strings.Fields(out) {
			if strings.HasPrefix(w, from+":") {
				p, _ := strconv.Atoi(strings.TrimPrefix(w, from+":"))
				sp = uint32(p)
			}
		}
		if sp == 0 {
			t.Fatalf("no client port in %q", out)
		}
		sent := c.tcpEventsOnce(t, dst.Node, contract.TCPEventResetSent, at, func(f *flowpb.Flow) bool {
			_, s, d := ports(f)
			return f.GetIP().GetSource() == dst.IP && s == 7 && d == sp
		})
		if len(sent) != 1 {
			t.Errorf("%d resets sent for one connect:\n%s", len(sent), describeAll(sent))
		}
		f := sent[0]
		checkEndpoint(t, f, "source", f.GetSource(), dst)
		if r := contract.TCPEvent(f)[contract.ExtTCPReason].GetStringValue(); r != "SK_RST_REASON_NO_SOCKET" {
			t.Errorf("reset reason %q, want SK_RST_REASON_NO_SOCKET", r)
		}
		if d := f.GetTime().AsTime().Sub(at); d > 2*time.Second {
			t.Errorf("reset %s after the fault", d)
		}
		recv := c.tcpEventsOnce(t, src.Node, contract.TCPEventResetReceived, at, func(f *flowpb.Flow) bool {
			_, s, d := ports(f)
			return f.GetIP().GetDestination() == src.IP && s == 7 && d == sp
		})
		checkEndpoint(t, recv[0], "destination", recv[0].GetDestination(), src)
		text := c.mustLoupe(t, "observe", "--server", c.agent(t, dst.Node), "--since", at.Add(-time.Second).UTC().Format(time.RFC3339Nano),
			"--tcp-events", "--color", "never", "--ip", src.IP)
		if !strings.Contains(text, "tcp:reset_sent:NO_SOCKET FORWARDED") {
			t.Errorf("compact output lacks the reset:\n%s", text)
		}
	})

	t.Run("retransmit", func(t *testing.T) {
		const port = 5201
		c.mustLab(t, "fault", "loss", "--pod", to, "--percent", "2", "--protocol", "tcp", "--port", strconv.Itoa(port))
		t.Cleanup(func() {
			c.lab("fault", "loss", "--pod", to, "--percent", "2", "--protocol", "tcp", "--port", strconv.Itoa(port), "--remove")
		})
		var ln net.Listener
		if err := ns.WithNetNSPath(c.netnsPath(dst), func(ns.NetNS) error {
			var err error
			ln, err = net.Listen("tcp4", net.JoinHostPort(dst.IP, strconv.Itoa(port)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			s, err := ln.Accept()
			if err != nil {
				return
			}
			defer s.Close()
			_, _ = io.Copy(io.Discard, s)
		}()
		var conn net.Conn
		if err := ns.WithNetNSPath(c.netnsPath(src), func(ns.NetNS) error {
			var err error
			conn, err = net.DialTimeout("tcp4", net.JoinHostPort(dst.IP, strconv.Itoa(port)), 3*time.Second)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		at := time.Now()
		sp := uint32(conn.LocalAddr().(*net.TCPAddr).Port)
		buf := make([]byte, 64<<10)
		for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
			if _, err := conn.Write(buf); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(300 * time.Millisecond) // the last retransmissions of the queue
		out, err := exec.Command("nsenter", "--net="+c.netnsPath(src), "ss", "-tin", "sport", "= :"+strconv.Itoa(int(sp))).CombinedOutput()
		if err != nil {
			t.Fatalf("ss: %v: %s", err, out)
		}
		m := ssRetrans.FindSubmatch(out)
		if m == nil {
			t.Fatalf("no retransmissions in ss -ti:\n%s", out)
		}
		want, _ := strconv.ParseUint(string(m[1]), 10, 64)

		mine := func(f *flowpb.Flow) bool {
			_, s, d := ports(f)
			return f.GetIP().GetSource() == src.IP && s == sp && d == port
		}
		var got []*flowpb.Flow
		var sum, last uint64
		// Wait until loupe has caught up with the count ss saw.
		_ = poll(2*time.Second, 200*time.Millisecond, func() error {
			got = c.tcpEventsOnce(t, src.Node, contract.TCPEventRetransmit, at, mine)
			sum, last = 0, 0
			for _, f := range got {
				x := contract.TCPEvent(f)
				sum += uint64(x[contract.ExtTCPSegments].GetNumberValue())
				last = max(last, uint64(x[contract.ExtTCPConnRetrans].GetNumberValue()))
			}
			if last < want {
				return fmt.Errorf("%d of %d", last, want)
			}
			return nil
		})
		t.Logf("ss -ti retrans %d; loupe: %d flows, %d segments, connection total %d", want, len(got), sum, last)
		within := func(n uint64) bool { return n*10 >= want*9 && n*10 <= want*11 }
		if !within(sum) || !within(last) {
			t.Errorf("loupe counts %d segments (connection total %d), ss -ti %d: want within 10%%", sum, last, want)
		}
		for _, f := range got[:1] {
			checkEndpoint(t, f, "source", f.GetSource(), src)
			checkEndpoint(t, f, "destination", f.GetDestination(), dst)
			if f.GetVerdict() != flowpb.Verdict_FORWARDED || f.GetTraceObservationPoint() != flowpb.TraceObservationPoint_FROM_STACK {
				t.Errorf("retransmission flow %s", describe(f))
			}
		}

		// Per edge in Prometheus, with workload-level labels.
		var addr string
		for _, n := range c.status.Nodes {
			if n.Name == src.Node {
				addr = n.MetricsAddress
			}
		}
		res, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		re := regexp.MustCompile(`(?m)^loupe_tcp_retransmits_total\{[^}]*destination_namespace="` + regexp.QuoteMeta(dst.Namespace) +
			`"[^}]*source_namespace="` + regexp.QuoteMeta(src.Namespace) + `"[^}]*\} (\d+)`)
		if mm := re.FindSubmatch(body); mm == nil {
			t.Errorf("no loupe_tcp_retransmits_total for %s -> %s:\n%s", from, to, grepLines(string(body), "loupe_tcp_"))
		} else if n, _ := strconv.ParseUint(string(mm[1]), 10, 64); n < sum {
			t.Errorf("loupe_tcp_retransmits_total %d < %d segments of the connection", n, sum)
		}

		// The stock hubble CLI prints the flows, extension included.
		bin := testtools.Hubble(t, "hubble")
		hout, herr, err := hubble(t, bin, "observe", "--server", c.agent(t, src.Node), "--since", at.Add(-time.Second).UTC().Format(time.RFC3339Nano),
			"-o", "json", "--ip", src.IP, "--type", "trace")
		if err != nil {
			t.Fatalf("hubble observe: %v\n%s", err, herr)
		}
		n := 0
		for _, hf := range flowsOf(parseFlows(t, hout)) {
			if tcpEvent(hf) == contract.TCPEventRetransmit && mine(hf) {
				n++
			}
		}
		if n == 0 {
			t.Errorf("hubble observe -o json shows no retransmission with its tcp extension (%d bytes):\n%.2000s\n%s", len(hout), hout, herr)
		}
		if _, herr, err := hubble(t, bin, "observe", "--server", c.agent(t, src.Node), "--last", "50", "--type", "trace"); err != nil {
			t.Errorf("hubble observe (compact): %v\n%s", err, herr)
		}
	})
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
