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
