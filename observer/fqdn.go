package observer

import (
	"net/netip"
	"slices"
	"strings"
)

// Bounds of the FQDN cache: the pods (DNS clients) it keeps, and the
// addresses per pod. A pod past the bound starts over; a cache past its
// pods is emptied: names are a convenience, memory is not.
const (
	maxFQDNClients  = 4096
	maxFQDNPerPod   = 1024
	maxNamesPerAddr = 8
)

// fqdnCache holds the names each DNS client learnt for addresses from the
// answers it got, until their TTL ends, as Cilium's per-endpoint DNS
// history does. L3/L4 flows take destination_names (and source_names on
// the way back) from it. Guarded by Observer.mu.
type fqdnCache struct {
	clients map[netip.Addr]map[netip.Addr][]fqdnName
}

type fqdnName struct {
	name    string // without the trailing dot, as Hubble shows names
	expires uint64 // CLOCK_BOOTTIME ns
}

func newFQDNCache() *fqdnCache {
	return &fqdnCache{clients: map[netip.Addr]map[netip.Addr][]fqdnName{}}
}

// learn records that client resolved name to ips at now, for ttl seconds.
func (c *fqdnCache) learn(client netip.Addr, name string, ips []netip.Addr, ttl uint32, now uint64) {
	if len(ips) == 0 || ttl == 0 {
		return
	}
	name = strings.TrimSuffix(name, ".")
	m := c.clients[client]
	if m == nil {
		if len(c.clients) >= maxFQDNClients {
			clear(c.clients)
		}
		m = map[netip.Addr][]fqdnName{}
		c.clients[client] = m
	}
	exp := now + uint64(ttl)*1e9
	for _, ip := range ips {
		ns := m[ip]
		if i := slices.IndexFunc(ns, func(n fqdnName) bool { return n.name == name }); i >= 0 {
			ns[i].expires = max(ns[i].expires, exp)
			continue
		}
		if len(m) >= maxFQDNPerPod {
			clear(m)
		}
		if len(ns) >= maxNamesPerAddr {
			ns = ns[1:]
		}
		m[ip] = append(ns, fqdnName{name, exp})
	}
}

// names returns the unexpired names client learnt for ip at now; nil if
// none. Expired names are dropped on the way.
func (c *fqdnCache) names(client, ip netip.Addr, now uint64) []string {
	if len(c.clients) == 0 {
		return nil
	}
	m := c.clients[client]
	if m == nil {
		return nil
	}
	ns := m[ip]
	if len(ns) == 0 {
		return nil
	}
	var out []string
	live := ns[:0]
	for _, n := range ns {
		if n.expires > now {
			live = append(live, n)
			out = append(out, n.name)
		}
	}
	if len(live) == 0 {
		delete(m, ip)
	} else {
		m[ip] = live
	}
	return out
}
