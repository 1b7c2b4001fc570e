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

// lookupStep is one key the datapath tries, and the match type it reports.
type lookupStep struct {
	peer  uint32
	port  uint16
	proto uint8
	match uint8
}

// lookupSteps is the datapath's lookup order (datapath/bpf/policy.h), most
// specific first.
func lookupSteps(peer uint32, port uint16, proto uint8) [6]lookupStep {
	return [6]lookupStep{
		{peer, port, proto, contract.PolicyMatchL3L4},
		{peer, 0, proto, contract.PolicyMatchL3L4},
		{peer, 0, 0, contract.PolicyMatchL3Only},
		{contract.IdentityUnknown, port, proto, contract.PolicyMatchL4Only},
		{contract.IdentityUnknown, 0, proto, contract.PolicyMatchL4Only},
		{contract.IdentityUnknown, 0, 0, contract.PolicyMatchAll},
	}
}

// Lookup does what the datapath's policy_lookup does (datapath/bpf/policy.h)
// on a whole policy map: the most specific of six keys decides, no key
// means deny with rule 0.
func Lookup(entries map[datapath.PolicyKey]datapath.PolicyEntry, epID, peer uint32, port uint16, proto, dir uint8) Verdict {
	for _, s := range lookupSteps(peer, port, proto) {
		if e, ok := entries[datapath.PolicyKey{EndpointID: epID, PeerIdentity: s.peer, Port: s.port, Proto: s.proto, Direction: dir}]; ok {
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
	for _, s := range lookupSteps(peer, port, proto) {
		if e, ok := entries[EntryKey{Peer: s.peer, Port: s.port, Proto: s.proto, Direction: dir}]; ok {
			return Verdict{Allowed: !e.Deny, RuleID: e.RuleID, Match: s.match}
		}
	}
	return Verdict{}
}
