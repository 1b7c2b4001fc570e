package e2e

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/internal/testtools"
	"github.com/loupe-project/loupe/lab"
)

// closedPort is a UDP port no lab pod serves (they serve 80 and 81).
const closedPort = 9

// sendClosed sends one UDP datagram from pod src to dst's closedPort from a
// fresh socket, and returns its source port and when it was sent.
func (c *cluster) sendClosed(t *testing.T, src, dst lab.PodStatus) (uint32, time.Time) {
	t.Helper()
	var sport int
	sent := time.Now()
	err := ns.WithNetNSPath(c.netnsPath(src), func(ns.NetNS) error {
		nc, err := net.Dial("udp4", net.JoinHostPort(dst.IP, strconv.Itoa(closedPort)))
		if err != nil {
			return err
		}
		defer nc.Close()
		sent = time.Now()
		if _, err := nc.Write([]byte("loupe-e2e-closed")); err != nil {
			return err
		}
		sport = nc.LocalAddr().(*net.UDPAddr).Port
		return nil
	})
	if err != nil {
		t.Fatalf("send from %s/%s to %s:%d: %v", src.Namespace, src.Name, dst.IP, closedPort, err)
	}
	return uint32(sport), sent
}

func kernelReason(f *flowpb.Flow) string {
	return contract.KernelDrop(f)[contract.ExtKernelReason].GetStringValue()
}

// A UDP datagram to a closed port of a pod on another node: the kernel of
// the receiving pod drops it with NO_SOCKET. loupe observe shows it within
// 2 s against that pod, on its node only (one report across the three
// agents that share this kernel, and one through the relay), with the
// reason and the function in the text and JSON outputs; the stock hubble
// CLI prints the same flow.
func TestPrivilegedKernelDropNoSocket(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	src, dst := c.podsOn(names[0])[0], c.podsOn(names[1])[0]
	agent := c.agent(t, dst.Node)
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)

	fl := c.follow(t, agent, "--kernel-drop-reason", "NO_SOCKET")
	// The stream may start after the first sends: send until one shows,
	// and time the one that did.
	sends := map[uint32]time.Time{}
	var got followed
	var sport uint32
	deadline := time.Now().Add(20 * time.Second)
	for sport == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no NO_SOCKET drop of %s -> %s:%d in 20s; stderr:\n%s", src.IP, dst.IP, closedPort, fl.stderrText())
		}
		sp, at := c.sendClosed(t, src, dst)
		sends[sp] = at
		wait := time.NewTimer(500 * time.Millisecond)
	drain:
		for {
			select {
			case l := <-fl.flows:
				f := l.res.GetFlow()
				_, fsp, fdp := ports(f)
				if f.GetIP().GetSource() == src.IP && f.GetIP().GetDestination() == dst.IP && fdp == closedPort {
					if _, ours := sends[fsp]; ours {
						got, sport = l, fsp
						break drain
					}
				}
			case <-wait.C:
				break drain
			}
		}
		wait.Stop()
	}
	f := got.res.GetFlow()
	d := got.read.Sub(sends[sport])
	t.Logf("NO_SOCKET drop shown %s after the send", d)
	if d > 2*time.Second {
		t.Errorf("the drop showed %s after the send, want within 2s", d)
	}
	if f.GetVerdict() != flowpb.Verdict_DROPPED || kernelReason(f) != "SKB_DROP_REASON_NO_SOCKET" {
		t.Errorf("verdict %s, kernel reason %q", f.GetVerdict(), kernelReason(f))
	}
	if f.GetNodeName() != dst.Node {
		t.Errorf("node %q, want the receiving pod's %q", f.GetNodeName(), dst.Node)
	}
	checkEndpoint(t, f, "destination", f.GetDestination(), dst)
	if fn := contract.KernelDrop(f)[contract.ExtKernelFunction].GetStringValue(); fn == "" {
		t.Errorf("no kernel function: %v", contract.KernelDrop(f))
	}
	if by := contract.KernelDrop(f)[contract.ExtKernelAttributedBy].GetStringValue(); by != "netns" {
		t.Errorf("attributed_by %q, want netns", by)
	}

	// Once: no other agent reports it, and the relay shows one.
	mine := func(fs []*flowpb.Flow) []*flowpb.Flow {
		var out []*flowpb.Flow
		for _, f := range fs {
			_, sp, dp := ports(f)
			if f.GetIP().GetSource() == src.IP && sp == sport && dp == closedPort && contract.KernelDrop(f) != nil {
				out = append(out, f)
			}
		}
		return out
	}
	total := 0
	for _, n := range names {
		fs := mine(c.observe(t, c.agent(t, n), "--since", since, "--kernel-drops"))
		total += len(fs)
		if n != dst.Node && len(fs) > 0 {
			t.Errorf("agent of %s also reported the drop:\n%s", n, describeAll(fs))
		}
	}
	if total != 1 {
		t.Errorf("%d reports of the drop across the agents, want 1", total)
	}
	var viaRelay []*flowpb.Flow
	if err := poll(10*time.Second, 300*time.Millisecond, func() error {
		viaRelay = mine(c.observe(t, c.status.RelayAddress, "--since", since, "--kernel-drop-reason", "SKB_DROP_REASON_NO_SOCKET"))
		if len(viaRelay) != 1 {
			return fmt.Errorf("%d reports through the relay, want 1", len(viaRelay))
		}
		return nil
	}); err != nil {
		t.Errorf("%v:\n%s", err, describeAll(viaRelay))
	}

	// The text output names the reason and the function.
	out := c.mustLoupe(t, "observe", "--server", agent, "--since", since, "--kernel-drops", "--color", "never", "--ip", src.IP)
	fn := contract.KernelDrop(f)[contract.ExtKernelFunction].GetStringValue()
	if !strings.Contains(out, "kernel:NO_SOCKET DROPPED") || !strings.Contains(out, "SKB_DROP_REASON_NO_SOCKET in "+fn) {
		t.Errorf("compact output lacks the reason or function:\n%s", out)
	}

	// The stock hubble CLI prints the flow, extension included.
	bin := testtools.Hubble(t, "hubble")
	hout, herr, err := hubble(t, bin, "observe", "--server", agent, "--since", since, "-o", "json", "--ip", src.IP)
	if err != nil {
		t.Fatalf("hubble observe: %v\n%s", err, herr)
	}
	found := false
	for _, hf := range flowsOf(parseFlows(t, hout)) {
		if hf.GetUuid() == f.GetUuid() {
			found = kernelReason(hf) == "SKB_DROP_REASON_NO_SOCKET"
		}
	}
	if !found {
		t.Errorf("hubble observe -o json lacks the drop %s with its kernel_drop extension:\n%s", f.GetUuid(), hout)
	}
	cout, herr, err := hubble(t, bin, "observe", "--server", agent, "--since", since, "--ip", src.IP, "--type", "drop")
	if err != nil || !strings.Contains(cout, "SKB_DROP_REASON_NO_SOCKET") {
		t.Errorf("hubble observe (compact) %v: lacks the reason:\n%s\n%s", err, cout, herr)
	}
}

// kernelDropOnce waits until the agent of dst's node shows one kernel drop
// of reason that match selects, within 2 s of the fault (at), and checks
// that no other agent reports it. It returns the drops it found.
func (c *cluster) kernelDropOnce(t *testing.T, dst lab.PodStatus, reason string, at time.Time, match func(*flowpb.Flow) bool) []*flowpb.Flow {
	t.Helper()
	since := at.Add(-time.Second).UTC().Format(time.RFC3339Nano)
	pick := func(fs []*flowpb.Flow) []*flowpb.Flow {
		var out []*flowpb.Flow
		for _, f := range fs {
			if kernelReason(f) == reason && match(f) {
				out = append(out, f)
			}
		}
		return out
	}
	var got []*flowpb.Flow
	err := poll(2*time.Second, 100*time.Millisecond, func() error {
		got = pick(c.observe(t, c.agent(t, dst.Node), "--since", since, "--kernel-drop-reason", reason))
		if len(got) == 0 {
			return fmt.Errorf("no %s kernel drop against %s/%s within 2s", reason, dst.Namespace, dst.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range got {
		checkEndpoint(t, f, "destination", f.GetDestination(), dst)
		if d := f.GetTime().AsTime().Sub(at); d > 2*time.Second {
			t.Errorf("drop at %s, %s after the fault", f.GetTime().AsTime(), d)
		}
	}
	for _, n := range c.nodeNames() {
		if n == dst.Node {
			continue
		}
		if fs := pick(c.observe(t, c.agent(t, n), "--since", since, "--kernel-drops")); len(fs) > 0 {
			t.Errorf("agent of %s also reported %s:\n%s", n, reason, describeAll(fs))
		}
	}
	return got
}

// The lab's fault commands make the kernel drop packets in the ways they
// promise, each shown once against the pod that suffered it.
func TestPrivilegedLabFaults(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	src, dst := c.podsOn(names[0])[1], c.podsOn(names[2])[0]
	from, to := src.Namespace+"/"+src.Name, dst.Namespace+"/"+dst.Name
	fromPort := func(out string) uint32 {
		// "... x/a:PORT -> ..."
		f := strings.Fields(out)
		for i, w := range f {
			if i+1 < len(f) && f[i+1] == "->" {
				p, _ := strconv.Atoi(w[strings.LastIndex(w, ":")+1:])
				return uint32(p)
			}
		}
		t.Fatalf("no source port in %q", out)
		return 0
	}

	t.Run("udp-closed", func(t *testing.T) {
		at := time.Now()
		sp := fromPort(c.mustLab(t, "fault", "udp-closed", "--from", from, "--to", to, "--port", "7"))
		got := c.kernelDropOnce(t, dst, "SKB_DROP_REASON_NO_SOCKET", at, func(f *flowpb.Flow) bool {
			p, s, d := ports(f)
			return p == "UDP" && s == sp && d == 7
		})
		if len(got) != 1 {
			t.Errorf("%d drops of one datagram:\n%s", len(got), describeAll(got))
		}
	})
	t.Run("tcp-closed", func(t *testing.T) {
		at := time.Now()
		out := c.mustLab(t, "fault", "tcp-closed", "--from", from, "--to", to, "--port", "7")
		if !strings.Contains(out, "refused (reset)") {
			t.Fatalf("tcp-closed: %s", out)
		}
		sp := fromPort(out)
		c.kernelDropOnce(t, dst, "SKB_DROP_REASON_NO_SOCKET", at, func(f *flowpb.Flow) bool {
			p, s, d := ports(f)
			return p == "TCP" && s == sp && d == 7 && f.GetL4().GetTCP().GetFlags().GetSYN()
		})
		// The reset back shows in the datapath's flows of the client.
		err := poll(2*time.Second, 100*time.Millisecond, func() error {
			for _, f := range c.observe(t, c.agent(t, src.Node), "--since", at.Add(-time.Second).UTC().Format(time.RFC3339Nano), "--to-ip", src.IP, "--protocol", "tcp") {
				if _, s, d := ports(f); s == 7 && d == sp && f.GetL4().GetTCP().GetFlags().GetRST() {
					return nil
				}
			}
			return fmt.Errorf("no RST to %s:%d", src.IP, sp)
		})
		if err != nil {
			t.Error(err)
		}
	})
	t.Run("netfilter-drop", func(t *testing.T) {
		c.mustLab(t, "fault", "netfilter-drop", "--pod", to, "--protocol", "udp", "--port", "81")
		t.Cleanup(func() { c.lab("fault", "netfilter-drop", "--pod", to, "--protocol", "udp", "--port", "81", "--remove") })
		at := time.Now()
		k := c.dialUDP(t, src, dst, 81)
		c.kernelDropOnce(t, dst, "SKB_DROP_REASON_NETFILTER_DROP", at, func(f *flowpb.Flow) bool {
			p, s, d := ports(f)
			return p == "UDP" && s == k && d == 81
		})
		c.mustLab(t, "fault", "netfilter-drop", "--pod", to, "--protocol", "udp", "--port", "81", "--remove")
		if out, _, code := c.lab("probe", "--from", from, "--to", to, "--port", "81", "--protocol", "udp"); code != 0 {
			t.Errorf("after --remove, UDP 81 still fails: %s", out)
		}
	})
	t.Run("loss", func(t *testing.T) {
		c.mustLab(t, "fault", "loss", "--pod", to, "--percent", "30", "--protocol", "udp", "--port", "80")
		t.Cleanup(func() {
			c.lab("fault", "loss", "--pod", to, "--percent", "30", "--protocol", "udp", "--port", "80", "--remove")
		})
		at := time.Now()
		sent := map[uint32]bool{}
		for range 40 {
			sent[c.dialUDP(t, src, dst, 80)] = true
		}
		got := c.kernelDropOnce(t, dst, "SKB_DROP_REASON_NETFILTER_DROP", at, func(f *flowpb.Flow) bool {
			p, s, d := ports(f)
			return p == "UDP" && sent[s] && d == 80
		})
		// 30% of 40: anything from 1 to 39 is random loss, not all or none.
		if len(got) == 0 || len(got) == len(sent) {
			t.Errorf("%d of %d datagrams dropped at 30%%", len(got), len(sent))
		}
	})
}

// dialUDP sends one datagram from src to dst:port and returns its source port.
func (c *cluster) dialUDP(t *testing.T, src, dst lab.PodStatus, port int) uint32 {
	t.Helper()
	var sport int
	err := ns.WithNetNSPath(c.netnsPath(src), func(ns.NetNS) error {
		nc, err := net.Dial("udp4", net.JoinHostPort(dst.IP, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		defer nc.Close()
		_, err = nc.Write([]byte("loupe-e2e\n"))
		sport = nc.LocalAddr().(*net.UDPAddr).Port
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return uint32(sport)
}
