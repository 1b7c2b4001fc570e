package secevents

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

func netEv(typ string, dst string, port uint32, query string) *Event {
	return &Event{Type: typ, Namespace: "demo", Pod: "frontend", ContainerID: "lab-demo-frontend", Labels: map[string]string{"app": "frontend"},
		Net: &NetEvent{SrcIP: netip.MustParseAddr("10.1.0.5"), DstIP: netip.MustParseAddr(dst), DstPort: port, L4: "tcp", DNSQuery: query}}
}

// Each default network rule fires once on its trigger (a retransmission
// or a second query within RefireAfter does not fire again), never on
// syscall events, and syscall rules never see network events.
func TestNetworkRules(t *testing.T) {
	en := NewEngine(mustCompile(t, DefaultRules()))
	tr, rf := NewNetTracker(), NewRefire()
	t0 := time.Unix(1000, 0)
	fire := func(e *Event, at time.Time) []string {
		e.Time = at
		if e.Type == "connect" {
			tr.Observe(e.Namespace+"/"+e.Pod, e.Net, at)
		}
		var names []string
		for _, m := range en.MatchNetwork(e, rf) {
			names = append(names, m.Rule.Name)
		}
		return names
	}
	world := func(e *Event) *Event { e.Net.World = true; return e }

	if got := fire(world(netEv("connect", "203.0.113.7", 443, "")), t0); strings.Join(got, ",") != "New outbound destination" {
		t.Errorf("first world connection: %v", got)
	}
	if got := fire(world(netEv("connect", "203.0.113.7", 443, "")), t0.Add(time.Second)); len(got) != 0 {
		t.Errorf("second connection to the same address: %v", got)
	}
	// An allowed CIDR, appended in a later file, does not fire; another
	// new world address does.
	allowed := NewEngine(mustCompile(t, DefaultRules(), src("allow.yaml", "- list: allowed_outbound_cidrs\n  append: true\n  items: [198.51.100.0/24]\n")))
	for dst, want := range map[string]int{"198.51.100.9": 0, "192.0.2.1": 1} {
		e := world(netEv("connect", dst, 443, ""))
		e.Net.NewDst = true
		if ms := allowed.MatchNetwork(e, NewRefire()); len(ms) != want {
			t.Errorf("%s with allowed CIDRs: %d matches, want %d", dst, len(ms), want)
		}
	}
	// A not-world (in-cluster) destination does not fire.
	if got := fire(netEv("connect", "10.1.1.9", 8080, ""), t0); len(got) != 0 {
		t.Errorf("in-cluster connection: %v", got)
	}

	// A scan: 20 distinct ports within 10s fires once.
	var fired []string
	for p := range uint32(30) {
		fired = append(fired, fire(netEv("connect", "10.1.1.10", 1000+p, ""), t0.Add(time.Duration(p)*100*time.Millisecond))...)
	}
	if strings.Join(fired, ",") != "Port or host scan" {
		t.Errorf("scan fired %v, want once", fired)
	}

	// DNS: a listed name fires once for A and AAAA; another name does not.
	if got := fire(netEv("dns", "10.1.0.53", 53, "pool.minexmr.com"), t0); strings.Join(got, ",") != "DNS query for a suspicious domain" {
		t.Errorf("dns: %v", got)
	}
	if got := fire(netEv("dns", "10.1.0.53", 53, "pool.minexmr.com"), t0.Add(10*time.Millisecond)); len(got) != 0 {
		t.Errorf("dns repeated: %v", got)
	}
	if got := fire(netEv("dns", "10.1.0.53", 53, "example.com"), t0); len(got) != 0 {
		t.Errorf("dns example.com: %v", got)
	}

	// The API server: from an unlabelled pod fires, from a labelled one not.
	api := netEv("connect", "10.96.0.1", 443, "")
	api.Net.APIServer = true
	if got := fire(api, t0); strings.Join(got, ",") != "Unexpected connection to the API server" {
		t.Errorf("api server: %v", got)
	}
	ok := netEv("connect", "10.96.0.1", 443, "")
	ok.Pod, ok.Labels, ok.Net.APIServer = "operator", map[string]string{"loupe.io/apiserver-access": "true"}, true
	if got := fire(ok, t0); len(got) != 0 {
		t.Errorf("api server from a labelled pod: %v", got)
	}

	// Syscall rules and network events stay apart.
	if m, matched := en.Match(world(netEv("connect", "203.0.113.8", 443, ""))); matched {
		t.Errorf("a syscall rule matched a network event: %s", m.Rule.Name)
	}
	if ms := en.MatchNetwork(shellExec("x", "a"), rf); len(ms) != 0 {
		t.Errorf("a network rule matched an exec: %s", ms[0].Rule.Name)
	}
	// Network rules leave the kernel filter as the syscall rules make it.
	if f := en.Rules().KernelFilter(); f.AllExecs || f.AllOpens {
		t.Errorf("network rules widened the kernel filter: %+v", f)
	}
}

func TestNetworkRuleRefused(t *testing.T) {
	for _, c := range []struct{ y, want string }{
		{"- rule: N\n  desc: d\n  condition: evt.type = connect and fd.snet in (10.0.0.0/33)\n  output: o\n  priority: ERROR\n  source: network\n", "fd.snet"},
		{"- rule: N\n  desc: d\n  condition: evt.type = connect and fd.sip = 1.2.3.4 and container.id != host\n  output: o\n  priority: ERROR\n  source: network\n  action: kill\n", "network rules only report"},
		{"- rule: N\n  desc: d\n  condition: evt.type = connect\n  output: o\n  priority: ERROR\n  source: k8s_audit\n", "source \"k8s_audit\" is not supported"},
	} {
		if _, err := Compile([]Source{src("n.yaml", c.y)}, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.y, err, c.want)
		}
	}
}

// TestNetTrackerDistinctMatchesWindow checks the kept distinct counts
// against a recount of the window, as hits enter and leave it by time and
// by the per-pod bound.
func TestNetTrackerDistinctMatchesWindow(t *testing.T) {
	tr := NewNetTracker()
	start := time.Unix(1000, 0)
	type hit struct {
		at   time.Time
		ip   netip.Addr
		port uint32
	}
	var all []hit
	for i := range 3 * maxRecentPerPod {
		now := start.Add(time.Duration(i) * 3 * time.Millisecond)
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i % 7), byte(i % 251)})
		n := &NetEvent{DstIP: ip, DstPort: uint32(i % 97)}
		tr.Observe("x/a", n, now)
		all = append(all, hit{now, ip, n.DstPort})
		ports, hosts := map[uint32]bool{}, map[netip.Addr]bool{}
		for j := len(all) - 1; j >= 0 && j > len(all)-1-maxRecentPerPod && now.Sub(all[j].at) <= ScanWindow; j-- {
			ports[all[j].port], hosts[all[j].ip] = true, true
		}
		if n.DistinctPorts != len(ports) || n.DistinctHosts != len(hosts) {
			t.Fatalf("hit %d: distinct ports %d hosts %d, the window holds %d and %d", i, n.DistinctPorts, n.DistinctHosts, len(ports), len(hosts))
		}
	}
}

// A pod that never stops connecting keeps one array, under three times
// the window's hits: once it is that large the window moves to its start
// instead of growing it.
func TestNetTrackerWindowArrayBounded(t *testing.T) {
	tr := NewNetTracker()
	start := time.Unix(1000, 0)
	observe := func(from, to int) {
		for i := from; i < to; i++ {
			n := &NetEvent{DstIP: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), DstPort: uint32(i % 97)}
			tr.Observe("x/a", n, start.Add(time.Duration(i)*time.Microsecond))
		}
	}
	observe(0, 5*maxRecentPerPod)
	p := tr.pods["x/a"]
	arr := &p.hits[:cap(p.hits)][cap(p.hits)-1]
	observe(5*maxRecentPerPod, 20*maxRecentPerPod)
	if got := len(p.recent()); got != maxRecentPerPod {
		t.Fatalf("window holds %d hits, want %d", got, maxRecentPerPod)
	}
	if c := cap(p.hits); c >= 3*maxRecentPerPod {
		t.Fatalf("hits array grew to %d, three times the window (%d) or more", c, maxRecentPerPod)
	}
	if &p.hits[:cap(p.hits)][cap(p.hits)-1] != arr {
		t.Fatal("the hits array was replaced after it stopped growing")
	}
}

// The typed getters of the network fields (field.addr, field.int) read
// what their string getters say, and a condition compiles to the same
// verdict through either, events without a network part included.
func TestNetFieldsTypedMatchStrings(t *testing.T) {
	events := []*Event{{Type: "open"}}
	for _, dst := range []string{"10.1.0.9", "203.0.113.7", "2001:db8::1", "::ffff:10.1.0.9"} {
		for _, port := range []uint32{0, 53, 443, 65535} {
			e := netEv("connect", dst, port, "")
			e.Net.DistinctPorts, e.Net.DistinctHosts = int(port%7), int(port%5)
			events = append(events, e)
		}
	}
	typed := 0
	for name, f := range netFields() {
		if f.addr == nil && f.int == nil {
			continue
		}
		typed++
		for _, e := range events {
			s, ok := f.get(e)
			if f.addr != nil {
				a, aok := f.addr(e)
				if want, err := netip.ParseAddr(s); aok != ok || (ok && (err != nil || want != a)) {
					t.Errorf("%s: typed %v %v, string %q %v", name, a, aok, s, ok)
				}
			}
			if f.int != nil {
				n, nok := f.int(e)
				if want, err := strconv.ParseInt(s, 10, 64); nok != ok || (ok && (err != nil || want != n)) {
					t.Errorf("%s: typed %d %v, string %q %v", name, n, nok, s, ok)
				}
			}
		}
	}
	if typed != 4 {
		t.Fatalf("%d network fields have typed getters, want 4 (fd.snet, fd.sport, net.distinct_*)", typed)
	}
	for _, cond := range []string{
		"fd.snet in (10.0.0.0/8, 2001:db8::/32)", "fd.snet != 203.0.113.0/24", "fd.snet = 10.1.0.9",
		"fd.sport = 443", "fd.sport in (53, 0x1bb)", "fd.sport >= 443", "fd.sport != 53",
		"net.distinct_ports > 3", "net.distinct_hosts in (1, 3)", "net.distinct_ports <= 2",
	} {
		n, err := parseCondition(cond)
		if err != nil {
			t.Fatalf("%s: %v", cond, err)
		}
		fast, err := compile(n)
		if err != nil {
			t.Fatalf("%s: %v", cond, err)
		}
		slow, err := compileWith(n, func(name string) (field, bool) {
			f, ok := lookupField(name)
			f.addr, f.int = nil, nil
			return f, ok
		})
		if err != nil {
			t.Fatalf("%s: %v", cond, err)
		}
		for _, e := range events {
			if fast(e) != slow(e) {
				t.Errorf("%s on %+v: typed %v, strings %v", cond, e.Net, fast(e), slow(e))
			}
		}
	}
}
