package policy

import (
	"net/netip"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// Verdict is the result of a policy-map lookup.
type Verdict struct {
	Allowed bool
	RuleID  uint32
	Match   uint8
}

// lookupStep is one key the datapath can match, and the match type it
// reports.
type lookupStep struct {
	peer  uint32
	port  uint16
	wild  uint8
	proto uint8
	match uint8
}

// maxLookupSteps: per peer (the packet's, then any), 16 port blocks, any
// port, any protocol.
const maxLookupSteps = 2 * (16 + 2)

// lookupSteps is the datapath's lookup order (datapath/bpf/policy.h), most
// specific first: its two LPM lookups, each spelled out as the keys the
// trie can match, longest prefix first (the blocks of 1, 2, 4 … 32,768
// ports around port, the protocol's any port, any protocol).
func lookupSteps(peer uint32, port uint16, proto uint8) ([maxLookupSteps]lookupStep, int) {
	var out [maxLookupSteps]lookupStep
	n := 0
	for _, p := range [2]uint32{peer, contract.IdentityUnknown} {
		var l4, l3 uint8 = contract.PolicyMatchL3L4, contract.PolicyMatchL3Only
		if p == contract.IdentityUnknown {
			l4, l3 = contract.PolicyMatchL4Only, contract.PolicyMatchAll
		}
		if proto != 0 {
			for w := uint8(0); port != 0 && w < 16; w++ {
				first := port &^ (uint16(1)<<w - 1)
				if first == 0 {
					break // port 0 is any port: no block starts there
				}
				out[n] = lookupStep{p, first, w, proto, l4}
				n++
			}
			out[n] = lookupStep{p, 0, 0, proto, l4}
			n++
		}
		out[n] = lookupStep{p, 0, 0, 0, l3}
		n++
	}
	return out, n
}

// Lookup does what the datapath's policy_lookup does (datapath/bpf/policy.h)
// on a whole policy map: the longest prefix of the peer's entries decides,
// else that of any peer's; no key means deny with rule 0.
func Lookup(entries map[datapath.PolicyKey]datapath.PolicyEntry, epID, peer uint32, port uint16, proto, dir uint8) Verdict {
	steps, n := lookupSteps(peer, port, proto)
	for _, s := range steps[:n] {
		if e, ok := entries[datapath.PolicyKey{EndpointID: epID, PeerIdentity: s.peer, Port: s.port, PortWildBits: s.wild, Proto: s.proto, Direction: dir}]; ok {
			return Verdict{Allowed: !e.Deny, RuleID: e.RuleID, Match: s.match}
		}
	}
	return Verdict{}
}

// IPCacheLookup does the datapath's ipcache lookup: longest prefix, world
// when nothing matches.
func IPCacheLookup(ipcache map[netip.Prefix]uint32, a netip.Addr) uint32 {
	a = a.Unmap()
	for bits := a.BitLen(); bits >= 0; bits-- {
		p, err := a.Prefix(bits)
		if err != nil {
			break
		}
		if id, ok := ipcache[p]; ok {
			return id
		}
	}
	return contract.IdentityWorld
}

// lookupEntries is Lookup on one endpoint's entries.
func lookupEntries(entries EndpointEntries, peer uint32, port uint16, proto, dir uint8) Verdict {
	steps, n := lookupSteps(peer, port, proto)
	for _, s := range steps[:n] {
		if e, ok := entries[EntryKey{Peer: s.peer, Port: s.port, PortWildBits: s.wild, Proto: s.proto, Direction: dir}]; ok {
			return Verdict{Allowed: !e.Deny, RuleID: e.RuleID, Match: s.match}
		}
	}
	return Verdict{}
}
