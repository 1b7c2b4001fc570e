package e2e

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/lab"
)

// checkEndpoint checks that a flow endpoint carries the lab pod's identity:
// namespace, pod name and its labels in Hubble's k8s:key=value form.
func checkEndpoint(t *testing.T, f *flowpb.Flow, side string, ep *flowpb.Endpoint, p lab.PodStatus) {
	t.Helper()
	if ep.GetNamespace() != p.Namespace || ep.GetPodName() != p.Name {
		t.Errorf("%s of %s is %s/%s, want %s/%s", side, describe(f), ep.GetNamespace(), ep.GetPodName(), p.Namespace, p.Name)
	}
	want := []string{"k8s:io.kubernetes.pod.namespace=" + p.Namespace}
	for k, v := range p.Labels {
		want = append(want, "k8s:"+k+"="+v)
	}
	for _, l := range want {
		if !slices.Contains(ep.GetLabels(), l) {
			t.Errorf("%s of %s lacks label %s: %v", side, describe(f), l, ep.GetLabels())
		}
	}
	if ep.GetIdentity() == 0 {
		t.Errorf("%s of %s has no identity", side, describe(f))
	}
}

// `loupe observe --server <agent> --last 50 -o json` after lab traffic and
// probes: every flow is this node's, enriched with pods, namespaces and
// labels, and the probes and connections show with their exact 5-tuples.
func TestPrivilegedObserveAgentJSON(t *testing.T) {
	c := needLab(t)
	c.mustLab(t, "traffic", "--duration", "3s", "--rate", "20")

	names := c.nodeNames()
	n1 := names[0]
	local := c.podsOn(n1)
	remote2, remote3 := c.podsOn(names[1]), c.podsOn(names[2])
	if len(local) < 3 || len(remote2) < 1 || len(remote3) < 1 {
		t.Fatalf("netpol pods not spread over the nodes: %v", c.status.Pods)
	}
	id := func(p lab.PodStatus) string { return p.Namespace + "/" + p.Name }
	type probe struct {
		from, to lab.PodStatus
		port     int
		proto    string
	}
	probes := []probe{
		{local[0], remote2[0], 80, "TCP"},
		{local[1], remote3[0], 81, "UDP"},
		{local[0], local[2], 81, "TCP"}, // on one node
	}
	for _, p := range probes {
		c.mustLab(t, "probe", "--from", id(p.from), "--to", id(p.to), "--port", fmt.Sprint(p.port), "--protocol", p.proto, "--timeout", "3s")
	}
	// Connections whose source port the test knows: exact 5-tuples.
	conns := []conn{
		c.dial(t, "TCP", local[2], remote3[0], 80),
		c.dial(t, "UDP", local[0], remote2[0], 80),
	}

	agent := c.agent(t, n1)
	var flows []*flowpb.Flow
	// The agent reads the ring buffer asynchronously: wait for the last connection.
	err := poll(10*time.Second, 200*time.Millisecond, func() error {
		flows = c.observe(t, agent, "--last", "50")
		if len(conns[1].matching(flows)) == 0 {
			return fmt.Errorf("no flow of %s in the agent's last 50", conns[1])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v:\n%s", err, describeAll(flows))
	}
	if len(flows) != 50 {
		t.Errorf("--last 50 returned %d flows, want 50 after this much traffic", len(flows))
	}
	byIP := map[string]lab.PodStatus{}
	for _, p := range c.status.Pods {
		byIP[p.IP] = p
	}
	uuids := map[string]bool{}
	for i, f := range flows {
		if f.GetNodeName() != n1 {
			t.Errorf("flow from agent %s has node_name %q: %s", n1, f.GetNodeName(), describe(f))
		}
		if f.GetUuid() == "" || uuids[f.GetUuid()] {
			t.Errorf("flow with empty or repeated uuid %q", f.GetUuid())
		}
		uuids[f.GetUuid()] = true
		// A kernel drop may be of a packet without an IP header.
		kernel := contract.KernelDrop(f) != nil
		if f.GetVerdict() == flowpb.Verdict_VERDICT_UNKNOWN || f.GetTime() == nil || !kernel && (f.GetIP() == nil || f.GetL4() == nil) {
			t.Errorf("flow lacks verdict, time, IP or l4: %v", f)
		}
		if i > 0 && f.GetTime().AsTime().Before(flows[i-1].GetTime().AsTime()) {
			t.Errorf("flows out of time order at %d", i)
		}
		if p, ok := byIP[f.GetIP().GetSource()]; ok {
			checkEndpoint(t, f, "source", f.GetSource(), p)
		}
		if p, ok := byIP[f.GetIP().GetDestination()]; ok {
			checkEndpoint(t, f, "destination", f.GetDestination(), p)
		}
	}

	for _, p := range probes {
		found := false
		for _, f := range flows {
			proto, _, dport := ports(f)
			if f.GetIP().GetSource() == p.from.IP && f.GetIP().GetDestination() == p.to.IP && proto == p.proto && dport == uint32(p.port) &&
				f.GetVerdict() == flowpb.Verdict_FORWARDED && !f.GetIsReply().GetValue() {
				found = true
			}
		}
		if !found {
			t.Errorf("no forwarded flow for probe %s -> %s %d/%s", id(p.from), id(p.to), p.port, p.proto)
		}
	}
	for _, k := range conns {
		ms := k.matching(flows)
		var fwd, reply int
		for _, f := range ms {
			if contract.KernelDrop(f) != nil {
				// The kernel's own drop (a UDP answer reaching a socket
				// the client closed): a flow besides the datapath's.
				continue
			}
			if f.GetVerdict() != flowpb.Verdict_FORWARDED {
				t.Errorf("%s: verdict %s", k, f.GetVerdict())
			}
			if k.forward(f) {
				fwd++
				if f.GetIsReply().GetValue() {
					t.Errorf("%s: forward flow marked as a reply: %s", k, describe(f))
				}
				if f.GetTraceObservationPoint() != flowpb.TraceObservationPoint_FROM_ENDPOINT || f.GetTrafficDirection() != flowpb.TrafficDirection_EGRESS {
					t.Errorf("%s: forward flow on the source node is %s %s, want FROM_ENDPOINT EGRESS", k, f.GetTraceObservationPoint(), f.GetTrafficDirection())
				}
			} else {
				reply++
				if !f.GetIsReply().GetValue() {
					t.Errorf("%s: reply flow not marked as a reply: %s", k, describe(f))
				}
			}
		}
		if fwd == 0 || k.proto == "TCP" && reply == 0 {
			t.Errorf("%s: %d forward and %d reply flows in the agent's last 50, want both for TCP, a forward one for UDP:\n%s", k, fwd, reply, describeAll(flows))
		}
	}
}

// A packet with a forged source address is DROPPED with INVALID_SOURCE_IP.
func TestPrivilegedObserveSpoofDropped(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	src, dst := c.podsOn(names[0])[0], c.podsOn(names[1])[0]
	forged := netip.MustParseAddr("192.0.2.77")
	sport := uint16(40000 + rand.IntN(20000))
	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	sent := c.spoof(t, src, forged, dst, sport, 81)

	agent := c.agent(t, src.Node)
	var drops []*flowpb.Flow
	var spoofed *flowpb.Flow
	err := poll(10*time.Second, 200*time.Millisecond, func() error {
		drops = c.observe(t, agent, "--verdict", "DROPPED", "--since", since)
		for _, f := range drops {
			_, sp, dp := ports(f)
			if f.GetIP().GetSource() == forged.String() && f.GetIP().GetDestination() == dst.IP && sp == uint32(sport) && dp == 81 {
				spoofed = f
				return nil
			}
		}
		return fmt.Errorf("no drop of the forged packet %s:%d -> %s:81", forged, sport, dst.IP)
	})
	if err != nil {
		t.Fatalf("%v; drops:\n%s", err, describeAll(drops))
	}
	for _, f := range drops {
		if f.GetVerdict() != flowpb.Verdict_DROPPED {
			t.Errorf("--verdict DROPPED returned %s", describe(f))
		}
	}
	f := spoofed
	if f.GetDropReasonDesc() != flowpb.DropReason_INVALID_SOURCE_IP {
		t.Errorf("drop_reason_desc %s, want INVALID_SOURCE_IP", f.GetDropReasonDesc())
	}
	if proto, _, _ := ports(f); proto != "UDP" {
		t.Errorf("l4 %s, want UDP", proto)
	}
	if f.GetNodeName() != src.Node {
		t.Errorf("node_name %q, want %q", f.GetNodeName(), src.Node)
	}
	checkEndpoint(t, f, "destination", f.GetDestination(), dst)
	if d := f.GetTime().AsTime().Sub(sent); d < -time.Second || d > 5*time.Second {
		t.Errorf("drop time %s is %s from the send time", f.GetTime().AsTime(), d)
	}
	// Dropped at the source: the destination's node never saw it.
	for _, f := range c.observe(t, c.agent(t, dst.Node), "--since", since, "--ip", forged.String()) {
		t.Errorf("the forged packet reached %s: %s", dst.Node, describe(f))
	}
	// The reason filter and the compact output name it too.
	out := c.mustLoupe(t, "observe", "--server", agent, "--since", since, "--drop-reason-desc", "INVALID_SOURCE_IP", "--color", "never")
	if !strings.Contains(out, forged.String()) || !strings.Contains(out, "DROPPED") {
		t.Errorf("compact output of --drop-reason-desc INVALID_SOURCE_IP lacks the forged packet:\n%s", out)
	}
}

// Follow mode, through an agent and through the relay: a new connection's
// flow arrives within 5s, and its time is within 1s of when it was sent.
func TestPrivilegedObserveFollow(t *testing.T) {
	c := needLab(t)
	names := c.nodeNames()
	src, dst := c.podsOn(names[0])[1], c.podsOn(names[2])[1]
	// printed bounds when the line reaches the test: 1s from an agent; the
	// relay adds up to its 1s sort window (--sort-buffer-drain-timeout).
	for _, tc := range []struct {
		name, server string
		printed      time.Duration
	}{
		{"agent", c.agent(t, src.Node), time.Second},
		{"relay", c.status.RelayAddress, 2500 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fl := c.follow(t, tc.server, "--ip", src.IP)
			c.live(t, fl, src, dst)
			k := c.dial(t, "TCP", src, dst, 80)
			l := fl.await(t, 5*time.Second, "flow of "+k.String(), k.forward)
			ft := l.res.GetFlow().GetTime().AsTime()
			lag := ft.Sub(k.sent)
			t.Logf("%s: flow time - send time %s; printed %s after the send", tc.name, lag, l.read.Sub(k.sent))
			if lag < -time.Second || lag > time.Second {
				t.Errorf("flow time %s is %s from the send time %s, want within 1s", ft, lag, k.sent)
			}
			if d := l.read.Sub(k.sent); d > tc.printed {
				t.Errorf("flow printed %s after the send, want within %s", d, tc.printed)
			}
			if l.res.GetFlow().GetNodeName() != src.Node {
				t.Errorf("first flow of %s from node %q, want %q", k, l.res.GetFlow().GetNodeName(), src.Node)
			}
		})
	}
}

// Filter flags on the real agent include and exclude the right flows.
func TestPrivilegedObserveFilters(t *testing.T) {
	c := needLab(t)
	n1 := c.nodeNames()[0]
	local := c.podsOn(n1)
	a1 := local[0]
	var a2, zb, zc lab.PodStatus
	for _, p := range local {
		if p.Namespace != a1.Namespace {
			a2 = p
			break
		}
	}
	third := ""
	for _, ns := range []string{"x", "y", "z"} {
		if ns != a1.Namespace && ns != a2.Namespace {
			third = ns
		}
	}
	for _, p := range c.status.Pods {
		if p.Namespace == third && p.Node != n1 {
			switch {
			case zb.Name == "":
				zb = p
			case zc.Name == "":
				zc = p
			}
		}
	}
	if a2.Name == "" || zb.Name == "" || zc.Name == "" || zb.Name == zc.Name {
		t.Fatalf("pod placement does not allow the test: %v", c.status.Pods)
	}
	t.Logf("a1=%s/%s a2=%s/%s b=%s/%s c=%s/%s on %s", a1.Namespace, a1.Name, a2.Namespace, a2.Name, zb.Namespace, zb.Name, zc.Namespace, zc.Name, n1)

	since := time.Now().Add(-time.Second).UTC().Format(time.RFC3339Nano)
	k1 := c.dial(t, "TCP", a1, zb, 80)
	k2 := c.dial(t, "UDP", a1, zc, 81)
	k3 := c.dial(t, "TCP", a2, zc, 81)
	k4 := c.dial(t, "UDP", a2, zb, 80)
	forged := netip.MustParseAddr("192.0.2.78")
	sport := uint16(40000 + rand.IntN(20000))
	c.spoof(t, a1, forged, zb, sport, 80)
	drop := conn{proto: "UDP", src: lab.PodStatus{Namespace: "(forged)", IP: forged.String()}, dst: zb, srcPort: uint32(sport), dstPort: 80}
	all := []conn{k1, k2, k3, k4, drop}

	agent := c.agent(t, n1)
	var flows []*flowpb.Flow
	if err := poll(10*time.Second, 200*time.Millisecond, func() error {
		flows = c.observe(t, agent, "--since", since)
		for _, k := range all {
			if len(k.matching(flows)) == 0 {
				return fmt.Errorf("no flow of %s", k)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("%v:\n%s", err, describeAll(flows))
	}

	is := func(ep *flowpb.Endpoint, p lab.PodStatus) bool {
		return ep.GetNamespace() == p.Namespace && ep.GetPodName() == p.Name
	}
	either := func(f *flowpb.Flow, m func(*flowpb.Endpoint) bool) bool {
		return m(f.GetSource()) || m(f.GetDestination())
	}
	hasPort := func(f *flowpb.Flow, p uint32) bool { _, s, d := ports(f); return s == p || d == p }
	cases := []struct {
		args    []string
		in, out []conn
		match   func(*flowpb.Flow) bool
	}{
		{[]string{"--pod", a1.Namespace + "/" + a1.Name}, []conn{k1, k2}, []conn{k3, k4},
			func(f *flowpb.Flow) bool { return either(f, func(e *flowpb.Endpoint) bool { return is(e, a1) }) }},
		{[]string{"--to-pod", zc.Namespace + "/" + zc.Name}, []conn{k2, k3}, []conn{k1, k4, drop},
			func(f *flowpb.Flow) bool { return is(f.GetDestination(), zc) }},
		{[]string{"--namespace", a2.Namespace}, []conn{k3, k4}, []conn{k1, k2},
			func(f *flowpb.Flow) bool {
				return either(f, func(e *flowpb.Endpoint) bool { return e.GetNamespace() == a2.Namespace })
			}},
		{[]string{"--port", "81"}, []conn{k2, k3}, []conn{k1, k4, drop},
			func(f *flowpb.Flow) bool { return hasPort(f, 81) }},
		{[]string{"--protocol", "udp"}, []conn{k2, k4, drop}, []conn{k1, k3},
			func(f *flowpb.Flow) bool { p, _, _ := ports(f); return p == "UDP" }},
		{[]string{"--label", "pod=" + zb.Name}, []conn{k1, k4}, []conn{k2, k3},
			func(f *flowpb.Flow) bool {
				return either(f, func(e *flowpb.Endpoint) bool { return slices.Contains(e.GetLabels(), "k8s:pod="+zb.Name) })
			}},
		{[]string{"--verdict", "DROPPED"}, []conn{drop}, []conn{k1, k2, k3, k4},
			func(f *flowpb.Flow) bool { return f.GetVerdict() == flowpb.Verdict_DROPPED }},
		{[]string{"--verdict", "FORWARDED"}, []conn{k1, k2, k3, k4}, []conn{drop},
			func(f *flowpb.Flow) bool { return f.GetVerdict() == flowpb.Verdict_FORWARDED }},
		{[]string{"--not", "--pod", a1.Namespace + "/" + a1.Name}, []conn{k3, k4}, []conn{k1, k2},
			func(f *flowpb.Flow) bool { return !either(f, func(e *flowpb.Endpoint) bool { return is(e, a1) }) }},
		// Flags AND; values of one flag OR.
		{[]string{"--pod", a1.Namespace + "/" + a1.Name, "--protocol", "tcp"}, []conn{k1}, []conn{k2, k3, k4},
			func(f *flowpb.Flow) bool {
				p, _, _ := ports(f)
				return p == "TCP" && either(f, func(e *flowpb.Endpoint) bool { return is(e, a1) })
			}},
		{[]string{"--port", "81", "--port", "80", "--protocol", "tcp"}, []conn{k1, k3}, []conn{k2, k4, drop},
			func(f *flowpb.Flow) bool {
				p, _, _ := ports(f)
				return p == "TCP" && (hasPort(f, 80) || hasPort(f, 81))
			}},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			got := c.observe(t, agent, append([]string{"--since", since}, tc.args...)...)
			for _, f := range got {
				if !tc.match(f) {
					t.Errorf("%v let through %s", tc.args, describe(f))
				}
			}
			for _, k := range tc.in {
				if len(k.matching(got)) == 0 {
					t.Errorf("%v left out %s", tc.args, k)
				}
			}
			for _, k := range tc.out {
				// A UDP answer reaching a socket the client has closed is
				// the kernel's drop (a flow of its own), not the datapath's.
				m := slices.DeleteFunc(k.matching(got), func(f *flowpb.Flow) bool { return contract.KernelDrop(f) != nil })
				if len(m) > 0 {
					t.Errorf("%v let through %s:\n%s", tc.args, k, describeAll(m))
				}
			}
			// Every flow of the unfiltered window that matches is there.
			want := 0
			for _, f := range flows {
				if tc.match(f) {
					want++
				}
			}
			if len(got) < want {
				t.Errorf("%v returned %d flows; %d of the window's flows match", tc.args, len(got), want)
			}
		})
	}
}
