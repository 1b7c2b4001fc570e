package secevents

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Network rules are evaluated in the agent over its flows and DNS
// events, not in the kernel. A rule with `source: network` is one: it sees
// only network events (evt.type connect or dns), and syscall rules never
// see them.

// SourceNetwork is the source of network rules.
const SourceNetwork = "network"

// ScanWindow is the time over which net.distinct_ports and
// net.distinct_hosts count a pod's destinations.
const ScanWindow = 10 * time.Second

// RefireAfter is how long a network rule stays quiet for the same pod and
// key (the same destination or query; for scan rules, any) after firing:
// a retransmitted SYN or a query sent for A and AAAA fires once.
const RefireAfter = ScanWindow

// NetEvent is what network rules see of a connection or a DNS query, from
// the source pod.
type NetEvent struct {
	SrcIP, DstIP  netip.Addr
	DstPort       uint32
	L4            string // tcp, udp, icmp
	DNSQuery      string // dns: the name asked, without the final dot
	World         bool   // the destination is outside the cluster (reserved:world)
	APIServer     bool   // the destination is the Kubernetes API server
	NewDst        bool   // the pod's first connection to DstIP the agent saw
	DistinctPorts int    // distinct destination ports of the pod in ScanWindow
	DistinctHosts int    // distinct destination IPs of the pod in ScanWindow
}

func onNet(f func(n *NetEvent) string) func(e *Event) (string, bool) {
	return func(e *Event) (string, bool) {
		if e.Net == nil {
			return "", false
		}
		return f(e.Net), true
	}
}

// onNetValue is a network field's typed value (field.addr, field.int).
func onNetValue[T any](e *Event, f func(n *NetEvent) T) (T, bool) {
	if e.Net == nil {
		var zero T
		return zero, false
	}
	return f(e.Net), true
}

// ipString is an address field's string: "" for none.
func ipString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// cidrField is a network address that = and in compare with CIDRs: its
// string is derived from the address the comparisons read (field.addr).
func cidrField(f func(n *NetEvent) netip.Addr) field {
	return field{get: onNet(func(n *NetEvent) string { return ipString(f(n)) }), cidr: true,
		addr: func(e *Event) (netip.Addr, bool) { return onNetValue(e, f) }}
}

// intField is a numeric network field: its string is derived from the
// number the comparisons read (field.int).
func intField(f func(n *NetEvent) int64) field {
	return field{get: onNet(func(n *NetEvent) string { return strconv.FormatInt(f(n), 10) }), numeric: true,
		int: func(e *Event) (int64, bool) { return onNetValue(e, f) }}
}

func netFields() map[string]field {
	return map[string]field{
		"fd.sip":     {get: onNet(func(n *NetEvent) string { return ipString(n.DstIP) })},
		"fd.cip":     {get: onNet(func(n *NetEvent) string { return ipString(n.SrcIP) })},
		"fd.snet":    cidrField(func(n *NetEvent) netip.Addr { return n.DstIP }),
		"fd.sport":   intField(func(n *NetEvent) int64 { return int64(n.DstPort) }),
		"fd.l4proto": {get: onNet(func(n *NetEvent) string { return n.L4 })},
		"dns.query": {get: func(e *Event) (string, bool) {
			if e.Net == nil || e.Type != "dns" {
				return "", false
			}
			return e.Net.DNSQuery, true
		}},
		"net.world":          {get: onNet(func(n *NetEvent) string { return boolStr(n.World) })},
		"net.apiserver":      {get: onNet(func(n *NetEvent) string { return boolStr(n.APIServer) })},
		"net.new_dst":        {get: onNet(func(n *NetEvent) string { return boolStr(n.NewDst) })},
		"net.distinct_ports": intField(func(n *NetEvent) int64 { return int64(n.DistinctPorts) }),
		"net.distinct_hosts": intField(func(n *NetEvent) int64 { return int64(n.DistinctHosts) }),
	}
}

// parsePrefixes reads fd.snet's values: CIDRs (a bare address is a /32
// or /128).
func parsePrefixes(vals []string) ([]netip.Prefix, error) {
	var ps []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR or an address", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		ps = append(ps, p.Masked())
	}
	return ps, nil
}

// NetTracker keeps, per source pod, the destinations it contacted: which
// it ever did (bounded), and which in the scan window.
type NetTracker struct {
	mu   sync.Mutex
	pods map[string]*podNet
}

type podNet struct {
	seen map[netip.Addr]bool
	// The window's hits are hits[head:], oldest first. Hits leave from
	// the front and enter at the back; when the back reaches the end of
	// the array, the window moves to its start (add), so a pod under a
	// flood of connects reuses one array (under three times the window).
	hits []netHit
	head int
	// How many hits in the window name each port and host: the distinct
	// counts are their lengths, kept as hits enter and leave the window
	// instead of recounted over the window at every flow.
	ports map[uint32]int
	hosts map[netip.Addr]int
}

// recent is the window's hits, oldest first.
func (p *podNet) recent() []netHit { return p.hits[p.head:] }

// drop takes the window's i oldest hits out of it.
func (p *podNet) drop(i int) {
	for _, h := range p.hits[p.head : p.head+i] {
		if p.ports[h.port]--; p.ports[h.port] == 0 {
			delete(p.ports, h.port)
		}
		if p.hosts[h.ip]--; p.hosts[h.ip] == 0 {
			delete(p.hosts, h.ip)
		}
	}
	p.head += i
}

// add puts h at the back of the window.
func (p *podNet) add(h netHit) {
	// Moving the window only pays when it frees half the array; else
	// append grows it, so a hit is copied O(1) times either way.
	if len(p.hits) == cap(p.hits) && p.head >= len(p.hits)/2 {
		n := copy(p.hits, p.hits[p.head:])
		p.hits, p.head = p.hits[:n], 0
	}
	p.hits = append(p.hits, h)
}

type netHit struct {
	at   int64 // Unix ns: 8 bytes where a time.Time takes 24, in each of a pod's 4,096 hits
	ip   netip.Addr
	port uint32
}

const maxSeenPerPod = 4096
const maxRecentPerPod = 4096

func NewNetTracker() *NetTracker { return &NetTracker{pods: map[string]*podNet{}} }

// Observe records a connection of pod to dst:port at now and fills the
// event's NewDst and scan counters.
func (t *NetTracker) Observe(pod string, n *NetEvent, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.pods[pod]
	if p == nil {
		if len(t.pods) > 65536 {
			clear(t.pods) // bounded memory: start again
		}
		p = &podNet{seen: map[netip.Addr]bool{}, ports: map[uint32]int{}, hosts: map[netip.Addr]int{}}
		t.pods[pod] = p
	}
	n.NewDst = !p.seen[n.DstIP]
	if n.NewDst {
		if len(p.seen) >= maxSeenPerPod {
			clear(p.seen)
		}
		p.seen[n.DstIP] = true
	}
	cut := 0
	at, recent := now.UnixNano(), p.recent()
	for cut < len(recent) && at-recent[cut].at > int64(ScanWindow) {
		cut++
	}
	if over := len(recent) - cut + 1 - maxRecentPerPod; over > 0 {
		cut += over
	}
	p.drop(cut)
	p.add(netHit{at, n.DstIP, n.DstPort})
	p.ports[n.DstPort]++
	p.hosts[n.DstIP]++
	n.DistinctPorts, n.DistinctHosts = len(p.ports), len(p.hosts)
}

// Refire suppresses a network rule that already fired for the same pod
// and key within RefireAfter.
type Refire struct {
	mu   sync.Mutex
	last map[refireKey]time.Time
}

// refireKey is what makes two firings of a rule the same: the rule and
// the pod, and for rules other than scans the destination or query.
// Fields, not one concatenated string, so a lookup allocates nothing: a
// scan rule is asked on every connect of a scanning pod.
type refireKey struct {
	rule, namespace, pod string
	typ, l4, query       string
	dst                  netip.Addr
	port                 uint32
}

func NewRefire() *Refire { return &Refire{last: map[refireKey]time.Time{}} }

// Fire says whether r may fire on e now, and notes that it did.
func (f *Refire) Fire(r *Rule, e *Event, now time.Time) bool {
	key := refireKey{rule: r.Name, namespace: e.Namespace, pod: e.Pod}
	if !r.scan {
		key.typ, key.dst, key.port, key.l4, key.query = e.Type, e.Net.DstIP, e.Net.DstPort, e.Net.L4, e.Net.DNSQuery
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if t, ok := f.last[key]; ok && now.Sub(t) < RefireAfter {
		return false
	}
	if len(f.last) > 65536 {
		for k, t := range f.last {
			if now.Sub(t) >= RefireAfter {
				delete(f.last, k)
			}
		}
	}
	f.last[key] = now
	return true
}

// usesScan says whether a condition reads the scan counters.
func usesScan(n *node) bool {
	if n.kind == nCmp {
		return strings.HasPrefix(n.field, "net.distinct_")
	}
	for _, k := range n.kids {
		if usesScan(k) {
			return true
		}
	}
	return false
}
