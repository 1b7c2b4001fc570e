package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/loupe-project/loupe/contract"
)

// Endpoint flags (struct endpoint_info.flags in bpf/endpoint.h).
const (
	epPolicyIngress uint32 = 0x01
	epPolicyEgress  uint32 = 0x02
	epHasIPv4       uint32 = 0x04
	epHasIPv6       uint32 = 0x08
)

// ReasonNoEndpoint is the counter reason of packets passed by a hook on an
// interface without an endpoint entry. Forwarded packets count under
// contract.VerdictForwarded, drops under their contract.Drop* reason.
const ReasonNoEndpoint uint8 = 0

// EndpointInfo is one local endpoint, keyed by its host-side veth ifindex.
// PolicyIngress / PolicyEgress switch policy enforcement on for a direction;
// while off, everything in that direction is allowed.
//
// PodMAC and HostMAC (the pod's interface and its host veth) let packets
// from other local pods be delivered straight into this one
// (bpf_redirect_peer, docs/datapath.md "Local delivery"). While either is
// zero, they are routed through the host.
type EndpointInfo struct {
	ID, Identity  uint32
	IPv4, IPv6    netip.Addr // zero Addr when the pod has no address of that family
	PolicyIngress bool
	PolicyEgress  bool
	PodMAC        [6]byte
	HostMAC       [6]byte
}

// deliverable says whether the endpoint gets local_eps entries.
func (ep EndpointInfo) deliverable() bool {
	return ep.PodMAC != [6]byte{} && ep.HostMAC != [6]byte{}
}

// addrs are the endpoint's valid addresses.
func (ep EndpointInfo) addrs() []netip.Addr {
	var out []netip.Addr
	for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
		if a.IsValid() {
			out = append(out, a)
		}
	}
	return out
}

func localKey(a netip.Addr) loupeLocalKey {
	var k loupeLocalKey
	b := a.As16()
	k.Family = 6
	if a.Is4() {
		k.Family = 4
		v4 := a.As4()
		b = [16]byte{}
		copy(b[:], v4[:])
	}
	// The program reads the words as the bytes in memory, network order.
	for i := range k.Addr {
		k.Addr[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return k
}

func (ep EndpointInfo) value() (loupeEndpointInfo, error) {
	v := loupeEndpointInfo{Id: ep.ID, Identity: ep.Identity}
	if ep.IPv4.IsValid() {
		if !ep.IPv4.Is4() {
			return v, fmt.Errorf("ipv4 %s is not an IPv4 address", ep.IPv4)
		}
		v.Ipv4 = ep.IPv4.As4()
		v.Flags |= epHasIPv4
	}
	if ep.IPv6.IsValid() {
		if !ep.IPv6.Is6() || ep.IPv6.Is4In6() {
			return v, fmt.Errorf("ipv6 %s is not an IPv6 address", ep.IPv6)
		}
		v.Ipv6 = ep.IPv6.As16()
		v.Flags |= epHasIPv6
	}
	if ep.PolicyIngress {
		v.Flags |= epPolicyIngress
	}
	if ep.PolicyEgress {
		v.Flags |= epPolicyEgress
	}
	return v, nil
}

func endpointFromValue(v loupeEndpointInfo) EndpointInfo {
	ep := EndpointInfo{
		ID:            v.Id,
		Identity:      v.Identity,
		PolicyIngress: v.Flags&epPolicyIngress != 0,
		PolicyEgress:  v.Flags&epPolicyEgress != 0,
	}
	if v.Flags&epHasIPv4 != 0 {
		ep.IPv4 = netip.AddrFrom4(v.Ipv4)
	}
	if v.Flags&epHasIPv6 != 0 {
		ep.IPv6 = netip.AddrFrom16(v.Ipv6)
	}
	return ep
}

// UpsertEndpoint adds or replaces the endpoint behind host veth hostIfindex,
// and its local delivery entries. The endpoint entry is written first, so
// a packet that finds a delivery entry also finds the endpoint; an address
// the endpoint no longer has loses its entry last.
func (d *Datapath) UpsertEndpoint(hostIfindex uint32, ep EndpointInfo) error {
	v, err := ep.value()
	if err != nil {
		return fmt.Errorf("upsert endpoint %d: %w", hostIfindex, err)
	}
	old, hadOld := d.endpoint(hostIfindex)
	if err := d.objs.Endpoints.Put(hostIfindex, v); err != nil {
		return fmt.Errorf("upsert endpoint %d: %w", hostIfindex, err)
	}
	var keep []netip.Addr
	if ep.deliverable() {
		le := loupeLocalEp{Ifindex: hostIfindex, PodMac: ep.PodMAC, HostMac: ep.HostMAC}
		for _, a := range ep.addrs() {
			if err := d.objs.LocalEps.Put(localKey(a), le); err != nil {
				return fmt.Errorf("upsert endpoint %d: local delivery of %s: %w", hostIfindex, a, err)
			}
		}
		keep = ep.addrs()
	}
	if hadOld {
		if err := d.deleteLocal(hostIfindex, old.addrs(), keep); err != nil {
			return fmt.Errorf("upsert endpoint %d: %w", hostIfindex, err)
		}
	}
	return nil
}

// DeleteEndpoint removes the endpoint behind hostIfindex and its local
// delivery entries; a missing one is fine.
func (d *Datapath) DeleteEndpoint(hostIfindex uint32) error {
	if old, ok := d.endpoint(hostIfindex); ok {
		if err := d.deleteLocal(hostIfindex, old.addrs(), nil); err != nil {
			return fmt.Errorf("delete endpoint %d: %w", hostIfindex, err)
		}
	}
	if err := d.objs.Endpoints.Delete(hostIfindex); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint %d: %w", hostIfindex, err)
	}
	return nil
}

// endpoint reads one endpoint entry, without its MACs.
func (d *Datapath) endpoint(hostIfindex uint32) (EndpointInfo, bool) {
	var v loupeEndpointInfo
	if err := d.objs.Endpoints.Lookup(hostIfindex, &v); err != nil {
		return EndpointInfo{}, false
	}
	return endpointFromValue(v), true
}

// deleteLocal removes the delivery entries of addrs that point at
// hostIfindex, except those in keep: an address that moved to another
// endpoint keeps that endpoint's entry.
func (d *Datapath) deleteLocal(hostIfindex uint32, addrs, keep []netip.Addr) error {
	for _, a := range addrs {
		if slices.Contains(keep, a) {
			continue
		}
		var le loupeLocalEp
		k := localKey(a)
		if err := d.objs.LocalEps.Lookup(k, &le); err != nil || le.Ifindex != hostIfindex {
			continue
		}
		if err := d.objs.LocalEps.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("local delivery of %s: %w", a, err)
		}
	}
	return nil
}

// withMACs fills ep's MACs from its local delivery entry, if it has one.
func (d *Datapath) withMACs(hostIfindex uint32, ep EndpointInfo) EndpointInfo {
	for _, a := range ep.addrs() {
		var le loupeLocalEp
		if d.objs.LocalEps.Lookup(localKey(a), &le) == nil && le.Ifindex == hostIfindex {
			ep.PodMAC, ep.HostMAC = le.PodMac, le.HostMac
			return ep
		}
	}
	return ep
}

// Endpoints lists the endpoints map by host ifindex.
func (d *Datapath) Endpoints() (map[uint32]EndpointInfo, error) {
	out := make(map[uint32]EndpointInfo)
	var (
		k uint32
		v loupeEndpointInfo
	)
	it := d.objs.Endpoints.Iterate()
	for it.Next(&k, &v) {
		out[k] = d.withMACs(k, endpointFromValue(v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	return out, nil
}

// Counter is one per-CPU counter entry, summed over CPUs.
type Counter struct {
	Reason     uint8 // contract.VerdictForwarded, a Drop* reason, or ReasonNoEndpoint
	Direction  uint8 // contract.DirectionIngress (to pod) or contract.DirectionEgress (from pod)
	EndpointID uint32
	RuleID     uint32 // policy rule that allowed or denied; 0 when none decided
	Packets    uint64
	Bytes      uint64
}

// Counters reads the counter map, summing each entry over CPUs.
func (d *Datapath) Counters() ([]Counter, error) {
	var (
		out  []Counter
		k    loupeCounterKey
		vals []loupeCounterVal
	)
	it := d.objs.Counters.Iterate()
	for it.Next(&k, &vals) {
		c := Counter{Reason: k.Reason, Direction: k.Direction, EndpointID: k.EpId, RuleID: k.RuleId}
		for _, v := range vals {
			c.Packets += v.Packets
			c.Bytes += v.Bytes
		}
		out = append(out, c)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read counters: %w", err)
	}
	return out, nil
}

// CTEntry is one conntrack entry, oriented as its first packet was.
type CTEntry struct {
	Ifindex   uint32 // host-side veth the connection was seen on
	Proto     uint8
	Src, Dst  netip.Addr
	SrcPort   uint16 // ICMP echo: the identifier (DstPort is then 0)
	DstPort   uint16
	Direction uint8 // of the first packet: contract.DirectionEgress (pod opened it) or contract.DirectionIngress
	RuleID    uint32
	MatchType uint8

	PacketsFwd, BytesFwd uint64 // in Direction
	PacketsRev, BytesRev uint64 // replies
	FirstSeenNS          uint64 // CLOCK_BOOTTIME
	LastSeenNS           uint64
	TCPFlagsFwd          uint8 // union of TCP flags seen each way
	TCPFlagsRev          uint8
	HandshakeNS          uint64 // TCP handshake time, 0 when not timed (bpf/conntrack.h ct_handshake)
}

func isICMP(proto uint8) bool { return proto == 1 || proto == 58 }

func addrFromKey(family uint8, b [16]uint8) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func ctEntryFrom(k loupeCtKey, v loupeCtEntry) CTEntry {
	e := CTEntry{
		Ifindex: k.Ifindex, Proto: k.Proto, Direction: v.FirstDir,
		RuleID: v.RuleId, MatchType: v.MatchType,
		PacketsFwd: v.PacketsFwd, BytesFwd: v.BytesFwd, PacketsRev: v.PacketsRev, BytesRev: v.BytesRev,
		FirstSeenNS: v.FirstSeen, LastSeenNS: v.LastSeen,
		TCPFlagsFwd: v.TcpFlagsFwd, TCPFlagsRev: v.TcpFlagsRev, HandshakeNS: v.HandshakeNs,
	}
	local, remote := addrFromKey(k.Family, k.Local), addrFromKey(k.Family, k.Remote)
	if v.FirstDir == contract.DirectionEgress {
		e.Src, e.Dst, e.SrcPort, e.DstPort = local, remote, k.Lport, k.Rport
	} else {
		e.Src, e.Dst, e.SrcPort, e.DstPort = remote, local, k.Rport, k.Lport
	}
	if isICMP(k.Proto) {
		e.SrcPort, e.DstPort = k.Lport, 0
	}
	return e
}

func (e CTEntry) key() (loupeCtKey, error) {
	k := loupeCtKey{Ifindex: e.Ifindex, Proto: e.Proto}
	if !e.Src.IsValid() || !e.Dst.IsValid() || e.Src.Is4() != e.Dst.Is4() {
		return k, fmt.Errorf("conntrack entry %s -> %s: bad addresses", e.Src, e.Dst)
	}
	k.Family = 6
	if e.Src.Is4() {
		k.Family = 4
	}
	local, remote, lport, rport := e.Src, e.Dst, e.SrcPort, e.DstPort
	if e.Direction != contract.DirectionEgress {
		local, remote, lport, rport = e.Dst, e.Src, e.DstPort, e.SrcPort
	}
	if isICMP(e.Proto) {
		lport, rport = e.SrcPort, 0
	}
	k.Local, k.Remote = addrBytes(local), addrBytes(remote)
	k.Lport, k.Rport = lport, rport
	return k, nil
}

func addrBytes(a netip.Addr) [16]uint8 {
	var b [16]uint8
	if a.Is4() {
		a4 := a.As4()
		copy(b[:], a4[:])
		return b
	}
	return a.As16()
}

// Conntrack lists the conntrack table.
func (d *Datapath) Conntrack() ([]CTEntry, error) {
	var (
		out []CTEntry
		k   loupeCtKey
		v   loupeCtEntry
	)
	it := d.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		out = append(out, ctEntryFrom(k, v))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read conntrack: %w", err)
	}
	return out, nil
}

// DeleteConntrack removes the entries for which drop returns true (for
// example connections a new policy denies) and returns how many it removed.
func (d *Datapath) DeleteConntrack(drop func(CTEntry) bool) (int, error) {
	var (
		keys []loupeCtKey
		k    loupeCtKey
		v    loupeCtEntry
	)
	it := d.objs.Conntrack.Iterate()
	for it.Next(&k, &v) {
		if drop(ctEntryFrom(k, v)) {
			keys = append(keys, k)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("delete conntrack: %w", err)
	}
	n := 0
	for i := range keys {
		err := d.objs.Conntrack.Delete(&keys[i])
		if err == nil {
			n++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("delete conntrack: %w", err)
		}
	}
	return n, nil
}

// DeleteConntrackEntry removes one entry (as returned by Conntrack); a
// missing one is fine.
func (d *Datapath) DeleteConntrackEntry(e CTEntry) error {
	k, err := e.key()
	if err != nil {
		return fmt.Errorf("delete conntrack: %w", err)
	}
	if err := d.objs.Conntrack.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete conntrack: %w", err)
	}
	return nil
}

func ipcacheKey(p netip.Prefix) (loupeIpcacheKey, error) {
	if !p.IsValid() {
		return loupeIpcacheKey{}, fmt.Errorf("invalid prefix %s", p)
	}
	p = p.Masked()
	k := loupeIpcacheKey{Prefixlen: 32 + uint32(p.Bits()), Family: 6, Addr: addrBytes(p.Addr())}
	if p.Addr().Is4() {
		k.Family = 4
	} else if p.Addr().Is4In6() {
		return k, fmt.Errorf("prefix %s: use a plain IPv4 prefix", p)
	}
	return k, nil
}

// UpsertIPCache maps an IP prefix (a /32 or /128 for a pod, a CIDR for an
// ipBlock) to a security identity. The longest prefix wins.
func (d *Datapath) UpsertIPCache(prefix netip.Prefix, identity uint32) error {
	k, err := ipcacheKey(prefix)
	if err != nil {
		return fmt.Errorf("upsert ipcache: %w", err)
	}
	if err := d.objs.Ipcache.Put(&k, loupeIpcacheValue{Identity: identity}); err != nil {
		return fmt.Errorf("upsert ipcache %s: %w", prefix, err)
	}
	return nil
}

// DeleteIPCache removes a prefix; a missing one is fine.
func (d *Datapath) DeleteIPCache(prefix netip.Prefix) error {
	k, err := ipcacheKey(prefix)
	if err != nil {
		return fmt.Errorf("delete ipcache: %w", err)
	}
	if err := d.objs.Ipcache.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete ipcache %s: %w", prefix, err)
	}
	return nil
}

// IPCache lists the ipcache: prefix → identity.
func (d *Datapath) IPCache() (map[netip.Prefix]uint32, error) {
	out := make(map[netip.Prefix]uint32)
	var (
		k loupeIpcacheKey
		v loupeIpcacheValue
	)
	it := d.objs.Ipcache.Iterate()
	for it.Next(&k, &v) {
		bits := int(k.Prefixlen) - 32
		out[netip.PrefixFrom(addrFromKey(k.Family, k.Addr), bits)] = v.Identity
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list ipcache: %w", err)
	}
	return out, nil
}

// Prefix lengths of the policy map's LPM key (POLICY_PREFIX_* in
// bpf/policy.h).
const (
	policyPrefixFixed = 72 // ep, peer, direction
	policyPrefixProto = 80 // + protocol
	policyPrefixFull  = 96 // + the 16 port bits
	policyFlagL4      = 0x01
)

// PolicyKey is one policy map key. PeerIdentity contract.IdentityUnknown,
// Port 0 and Proto 0 are wildcards. A key with a port names the aligned
// block of 2^PortWildBits ports from Port (PortBlocks splits a range into
// them). The datapath looks up, most specific first: the peer's entries by
// longest prefix ({peer,block,proto} L3_L4, {peer,0,proto} L3_L4,
// {peer,0,0} L3_ONLY), then the same for any peer (L4_ONLY, L4_ONLY, ALL).
type PolicyKey struct {
	EndpointID   uint32
	PeerIdentity uint32
	Port         uint16 // first destination port of the block, host order; 0 for any port
	PortWildBits uint8  // low bits of Port that any value matches: 0 for one port, at most 15
	Proto        uint8  // IPPROTO_*; 0 (then also Port 0) for any protocol
	Direction    uint8  // contract.DirectionIngress (to pod) or contract.DirectionEgress (from pod)
}

// EndPort is the last port of k's block (65535 for any port).
func (k PolicyKey) EndPort() uint16 {
	if k.Port == 0 {
		return 65535
	}
	return k.Port | (uint16(1)<<k.PortWildBits - 1)
}

// PortBlock is the aligned block of 2^WildBits ports from Port.
type PortBlock struct {
	Port     uint16
	WildBits uint8
}

// PortBlocks splits the range first..last into the fewest aligned blocks,
// in order. Port 0 is not a port here (in a key it means any port): it
// returns nil when first is 0 or first > last.
func PortBlocks(first, last uint16) []PortBlock {
	if first == 0 || first > last {
		return nil
	}
	var out []PortBlock
	for p := uint32(first); p <= uint32(last); {
		// The largest block aligned at p that does not pass last.
		w := uint8(min(bits.TrailingZeros32(p), 15))
		for p+1<<w-1 > uint32(last) {
			w--
		}
		out = append(out, PortBlock{Port: uint16(p), WildBits: w})
		p += 1 << w
	}
	return out
}

// be16 is the uint16 whose in-memory bytes are v in network order.
func be16(v uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return binary.NativeEndian.Uint16(b[:])
}

// Validate reports whether the map can hold k: a port needs a protocol,
// and a port block must be aligned and must not start at 0 (any port).
func (k PolicyKey) Validate() error {
	switch {
	case k.Proto == 0 && (k.Port != 0 || k.PortWildBits != 0):
		return fmt.Errorf("policy key %+v: a port needs a protocol", k)
	case k.Port == 0 && k.PortWildBits != 0:
		return fmt.Errorf("policy key %+v: port 0 is any port, it has no block", k)
	case k.PortWildBits > 15 || k.Port&(uint16(1)<<k.PortWildBits-1) != 0:
		return fmt.Errorf("policy key %+v: not an aligned port block", k)
	}
	return nil
}

func (k PolicyKey) raw() (loupePolicyKey, error) {
	rk := loupePolicyKey{EpId: k.EndpointID, PeerIdentity: k.PeerIdentity, Direction: k.Direction, Prefixlen: policyPrefixFixed}
	if err := k.Validate(); err != nil {
		return rk, err
	}
	switch {
	case k.Proto == 0:
	case k.Port == 0:
		rk.Proto, rk.Prefixlen = k.Proto, policyPrefixProto
	default:
		rk.Proto, rk.Dport, rk.Prefixlen = k.Proto, be16(k.Port), policyPrefixFull-uint32(k.PortWildBits)
	}
	return rk, nil
}

func policyKeyFrom(rk loupePolicyKey) PolicyKey {
	k := PolicyKey{EndpointID: rk.EpId, PeerIdentity: rk.PeerIdentity, Direction: rk.Direction}
	if rk.Prefixlen >= policyPrefixProto {
		k.Proto = rk.Proto
	}
	if rk.Prefixlen > policyPrefixProto {
		k.PortWildBits = uint8(policyPrefixFull - min(rk.Prefixlen, policyPrefixFull))
		k.Port = be16(rk.Dport) &^ (uint16(1)<<k.PortWildBits - 1)
	}
	return k
}

// PolicyEntry is the verdict of a policy key and the rule reported with it.
type PolicyEntry struct {
	RuleID uint32
	Deny   bool
}

const (
	policyAllow uint8 = 1
	policyDeny  uint8 = 2
)

// UpsertPolicy adds or replaces one policy entry.
func (d *Datapath) UpsertPolicy(k PolicyKey, e PolicyEntry) error {
	if err := putPolicy(d.objs.Policy, k, e); err != nil {
		return fmt.Errorf("upsert policy: %w", err)
	}
	return nil
}

func putPolicy(m *ebpf.Map, k PolicyKey, e PolicyEntry) error {
	rk, v, err := rawPolicy(k, e)
	if err != nil {
		return err
	}
	return m.Put(&rk, &v)
}

func rawPolicy(k PolicyKey, e PolicyEntry) (loupePolicyKey, loupePolicyValue, error) {
	rk, err := k.raw()
	if err != nil {
		return rk, loupePolicyValue{}, err
	}
	v := loupePolicyValue{RuleId: e.RuleID, Verdict: policyAllow}
	if e.Deny {
		v.Verdict = policyDeny
	}
	if k.Proto != 0 {
		v.Flags |= policyFlagL4
	}
	return rk, v, nil
}

// policyBatch is how many entries one BPF_MAP_UPDATE_BATCH call writes.
const policyBatch = 4096

// UpsertPolicies adds or replaces entries in order, in batches of
// policyBatch a system call: an agent writing a node's whole policy (a
// quarter million entries) spends most of its time in syscalls otherwise.
// On an error, some of the entries before the failing one may be
// written (the engine then rereads the map before its next apply).
func (d *Datapath) UpsertPolicies(keys []PolicyKey, entries []PolicyEntry) error {
	if len(keys) != len(entries) {
		return fmt.Errorf("upsert policies: %d keys, %d entries", len(keys), len(entries))
	}
	n := min(len(keys), policyBatch)
	rks, vs := make([]loupePolicyKey, 0, n), make([]loupePolicyValue, 0, n)
	for start := 0; start < len(keys); start += policyBatch {
		rks, vs = rks[:0], vs[:0]
		for i := start; i < min(start+policyBatch, len(keys)); i++ {
			rk, v, err := rawPolicy(keys[i], entries[i])
			if err != nil {
				return fmt.Errorf("upsert policies: %w", err)
			}
			rks, vs = append(rks, rk), append(vs, v)
		}
		_, err := d.objs.Policy.BatchUpdate(rks, vs, nil)
		if errors.Is(err, ebpf.ErrNotSupported) { // a kernel without batch ops on LPM tries
			for i := range rks {
				if err = d.objs.Policy.Put(&rks[i], &vs[i]); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("upsert policies: %w", err)
		}
	}
	return nil
}

// DeletePolicy removes one policy entry; a missing one is fine.
func (d *Datapath) DeletePolicy(k PolicyKey) error {
	rk, err := k.raw()
	if err != nil {
		return fmt.Errorf("delete policy: %w", err)
	}
	if err := d.objs.Policy.Delete(&rk); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete policy: %w", err)
	}
	return nil
}

// PolicyEntryBytes is the kernel memory one policy map entry costs at
// most: its trie node and at most one branching node, 72 bytes each as the
// memory cgroup charges them (TestPrivilegedPolicyMapMemory measures it).
// The map preallocates nothing, so its memory is its entries times this.
const PolicyEntryBytes = 144

// PolicyMapCapacity is the policy map's max_entries, as the programs
// declare it (bpf/policy.h), without loading them.
func PolicyMapCapacity() (int, error) {
	spec, err := loadLoupe()
	if err != nil {
		return 0, fmt.Errorf("policy map capacity: %w", err)
	}
	ms, ok := spec.Maps[MapPolicy]
	if !ok {
		return 0, fmt.Errorf("policy map capacity: no map %q in the programs", MapPolicy)
	}
	return int(ms.MaxEntries), nil
}

// PolicyCapacity is the loaded policy map's max_entries.
func (d *Datapath) PolicyCapacity() int { return int(d.objs.Policy.MaxEntries()) }

// PolicyMapUse counts the policy map's entries against its capacity: a
// full map makes the engine fail to write new policy.
func (d *Datapath) PolicyMapUse() (entries, capacity int, err error) {
	var (
		k loupePolicyKey
		v loupePolicyValue
	)
	it := d.objs.Policy.Iterate()
	for it.Next(&k, &v) {
		entries++
	}
	if err := it.Err(); err != nil {
		return 0, 0, fmt.Errorf("count policy: %w", err)
	}
	return entries, int(d.objs.Policy.MaxEntries()), nil
}

// Policy lists the policy map.
func (d *Datapath) Policy() (map[PolicyKey]PolicyEntry, error) {
	out := make(map[PolicyKey]PolicyEntry)
	var (
		k loupePolicyKey
		v loupePolicyValue
	)
	it := d.objs.Policy.Iterate()
	for it.Next(&k, &v) {
		out[policyKeyFrom(k)] = PolicyEntry{RuleID: v.RuleId, Deny: v.Verdict != policyAllow}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list policy: %w", err)
	}
	return out, nil
}

// LookupIPCache returns the identity of the longest ipcache prefix holding
// a, as the datapath's own lookup does.
func (d *Datapath) LookupIPCache(a netip.Addr) (uint32, bool) {
	if !a.IsValid() {
		return 0, false
	}
	k, err := ipcacheKey(netip.PrefixFrom(a, a.BitLen()))
	if err != nil {
		return 0, false
	}
	var v loupeIpcacheValue
	if err := d.objs.Ipcache.Lookup(&k, &v); err != nil {
		return 0, false
	}
	return v.Identity, true
}
