package policy

import (
	"math/rand/v2"
	"testing"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// Lookup and lookupEntries decide as the datapath's LPM lookups do by
// definition: among the keys of the peer, else of any peer, that contain
// the packet, the longest prefix (any protocol < any port < a block < a
// smaller block inside it).
func TestLookupMatchesLongestPrefix(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 3))
	const ep, dir, peerID = 7, contract.DirectionIngress, 300
	for round := range 40 {
		m := map[datapath.PolicyKey]datapath.PolicyEntry{}
		entries := EndpointEntries{}
		var edges []uint16
		for range 1 + r.IntN(40) {
			k := datapath.PolicyKey{EndpointID: ep, Direction: dir,
				PeerIdentity: []uint32{peerID, contract.IdentityUnknown}[r.IntN(2)],
				Proto:        []uint8{6, 17, 0}[r.IntN(3)]}
			if k.Proto != 0 && r.IntN(4) > 0 {
				k.PortWildBits = uint8(r.IntN(16))
				k.Port = uint16(r.IntN(65536)) &^ (uint16(1)<<k.PortWildBits - 1)
				if k.Port == 0 {
					k.Port = 1 << k.PortWildBits
				}
				edges = append(edges, k.Port-1, k.Port, k.EndPort(), k.EndPort()+1)
			}
			e := datapath.PolicyEntry{RuleID: uint32(len(m) + 1), Deny: r.IntN(3) == 0}
			m[k] = e
			entries[EntryKey{Peer: k.PeerIdentity, Port: k.Port, PortWildBits: k.PortWildBits, Proto: k.Proto, Direction: dir}] = e
		}
		for i := range 300 {
			port := uint16(r.IntN(65536))
			if i%2 == 0 && len(edges) > 0 {
				port = edges[r.IntN(len(edges))]
			}
			proto := []uint8{6, 17}[r.IntN(2)]
			want := longestPrefix(m, peerID, port, proto)
			if got := Lookup(m, ep, peerID, port, proto, dir); got != want {
				t.Fatalf("round %d, %d/%d: Lookup %+v, longest prefix %+v (entries %+v)", round, port, proto, got, want, m)
			}
			if got := lookupEntries(entries, peerID, port, proto, dir); got != want {
				t.Fatalf("round %d, %d/%d: lookupEntries %+v, longest prefix %+v", round, port, proto, got, want)
			}
		}
	}
}

func longestPrefix(m map[datapath.PolicyKey]datapath.PolicyEntry, peer uint32, port uint16, proto uint8) Verdict {
	for _, p := range []uint32{peer, contract.IdentityUnknown} {
		var best datapath.PolicyKey
		bestLen := -1
		for k := range m {
			if k.PeerIdentity != p || k.Proto != 0 && k.Proto != proto {
				continue
			}
			n := 0
			if k.Proto != 0 {
				n = 1
			}
			if k.Port != 0 {
				if port < k.Port || port > k.EndPort() {
					continue
				}
				n = 18 - int(k.PortWildBits)
			}
			if n > bestLen {
				best, bestLen = k, n
			}
		}
		if bestLen < 0 {
			continue
		}
		match := uint8(contract.PolicyMatchL3Only)
		switch {
		case p != contract.IdentityUnknown && best.Proto != 0:
			match = contract.PolicyMatchL3L4
		case p == contract.IdentityUnknown && best.Proto != 0:
			match = contract.PolicyMatchL4Only
		case p == contract.IdentityUnknown:
			match = contract.PolicyMatchAll
		}
		return Verdict{Allowed: !m[best].Deny, RuleID: m[best].RuleID, Match: match}
	}
	return Verdict{}
}
