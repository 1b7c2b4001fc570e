package policy

import (
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/metadata"
)

// dpEndpoints is the node's endpoint table over a real datapath: it writes
// the endpoint map and its pods' ipcache entries, as the agent does.
type dpEndpoints struct {
	dp   *datapath.Datapath
	cidr netip.Prefix
	eps  map[uint32]*EndpointState
	ips  map[uint32]netip.Addr
}

func (t *dpEndpoints) PolicyEndpoints() []EndpointState {
	out := make([]EndpointState, 0, len(t.eps))
	for _, e := range t.eps {
		out = append(out, *e)
	}
	return out
}

func (t *dpEndpoints) SetEndpointPolicy(want map[uint32]EndpointPolicy) error {
	for id, p := range want {
		e := t.eps[id]
		if e == nil {
			continue
		}
		ip := t.ips[id]
		if err := t.dp.UpsertEndpoint(e.Ifindex, datapath.EndpointInfo{ID: id, Identity: p.Identity, IPv4: ip,
			PolicyIngress: p.Flags.Ingress, PolicyEgress: p.Flags.Egress}); err != nil {
			return err
		}
		if err := t.dp.UpsertIPCache(netip.PrefixFrom(ip, 32), p.Identity); err != nil {
			return err
		}
		e.Identity, e.Flags = p.Identity, p.Flags
	}
	return nil
}

func (t *dpEndpoints) OwnsPrefix(p netip.Prefix) bool {
	return p.Bits() >= t.cidr.Bits() && t.cidr.Contains(p.Addr())
}

// BenchmarkPrivilegedApplyNode applies the benchmark cluster (1,000
// policies x 5,000 pods) on node0 (500 local pods) to a real datapath,
// as the agent's engine does: every round a fresh engine onto an empty
// policy map (an agent starting, or the first policy set), then one
// policy changed (incremental), five times. Reported (medians):
// ms/apply-full, cpu-ms/apply-full (the process's CPU time, the kernel's
// map work included: about what the wall time would be on an idle
// machine, as nothing in an apply sleeps), ms/apply-incremental and its
// cpu-ms, the entries and their kernel memory (datapath.PolicyEntryBytes
// each, measured by TestPrivilegedPolicyMapMemory). The bench harness
// turns these into the policy_apply_* rows.
func BenchmarkPrivilegedApplyNode(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	root := b.TempDir()
	b.Cleanup(func() {
		_ = datapath.Cleanup(root)
		_ = unix.Unmount(root, unix.MNT_DETACH)
	})
	dp, err := datapath.Load(datapath.Config{BPFRoot: root})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { dp.Close() })
	snap := benchSnapshot()
	m := NewModel(snap)
	eps := &dpEndpoints{dp: dp, cidr: netip.MustParsePrefix("10.10.0.0/16"), eps: map[uint32]*EndpointState{}, ips: map[uint32]netip.Addr{}}
	for _, l := range benchLocals(m, "node0") {
		eps.eps[l.ID] = &EndpointState{ID: l.ID, Ifindex: 100000 + l.ID, Namespace: l.Namespace, Name: l.Name, Identity: contract.IdentityInit}
		eps.ips[l.ID] = netip.MustParseAddr(m.Pod(l.Namespace, l.Name).Status.PodIP)
	}
	cfg := EngineConfig{Node: "node0", Datapath: dp, Endpoints: eps, PolicyCapacity: dp.PolicyCapacity()}
	empty := &metadata.Snapshot{Generation: "empty", Pods: snap.Pods, Namespaces: snap.Namespaces, Nodes: snap.Nodes}

	var full, incr, compile, fullCPU, incrCPU []time.Duration
	var st ApplyStats
	variant := 0
	b.StopTimer() // rounds time themselves: the clearing apply is not measured
	for range b.N {
		if _, err := NewEngine(cfg).Apply(empty); err != nil { // clears what the last round wrote
			b.Fatal(err)
		}
		if n, _, err := dp.PolicyMapUse(); err != nil || n != 0 {
			b.Fatalf("policy map not empty before the round: %d %v", n, err)
		}
		eng := NewEngine(cfg)
		c0 := cpuTime(b)
		t0 := time.Now()
		st, err = eng.Apply(snap)
		full = append(full, time.Since(t0))
		fullCPU = append(fullCPU, cpuTime(b)-c0)
		if err != nil {
			b.Fatal(err)
		}
		compile = append(compile, st.Compile)
		// One policy changes: a different peer and port range.
		for range 5 {
			variant++
			next := *snap
			next.NetworkPolicies = slices.Clone(snap.NetworkPolicies)
			next.NetworkPolicies[0] = benchPolicy(0, variant%7+1)
			next.Generation = "incr"
			c0, t0 = cpuTime(b), time.Now()
			ist, err := eng.Apply(&next)
			incr = append(incr, time.Since(t0))
			incrCPU = append(incrCPU, cpuTime(b)-c0)
			if err != nil {
				b.Fatal(err)
			}
			if ist.Upserted+ist.Deleted == 0 {
				b.Fatalf("incremental apply wrote nothing: %+v", ist)
			}
		}
	}
	n, _, err := dp.PolicyMapUse()
	if err != nil || n != st.Entries {
		b.Fatalf("policy map holds %d entries, the engine wrote %d (%v)", n, st.Entries, err)
	}
	ms := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Microseconds()) / 1000
	}
	b.ReportMetric(ms(full), "ms/apply-full")
	b.ReportMetric(ms(compile), "ms/compile-full")
	b.ReportMetric(ms(fullCPU), "cpu-ms/apply-full")
	b.ReportMetric(ms(incr), "ms/apply-incremental")
	b.ReportMetric(ms(incrCPU), "cpu-ms/apply-incremental")
	b.ReportMetric(float64(st.Entries), "policy-entries")
	b.ReportMetric(float64(st.IPCacheEntries), "ipcache-entries")
	b.ReportMetric(float64(st.Entries)*datapath.PolicyEntryBytes/(1<<20), "MiB-policy-map")
}

// cpuTime is the CPU time (user and system, the kernel's map work
// included) this process has used: on a shared machine, the part of an
// apply's wall time that is its own.
func cpuTime(tb testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
