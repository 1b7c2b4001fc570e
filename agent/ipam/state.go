package ipam

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// StateVersion is the version of the state file layout.
const StateVersion = 1

// maxStateSize bounds what ParseState accepts: far more than a node's pods.
const maxStateSize = 64 << 20

// State is the on-disk form of the allocator, <state-dir>/ipam.json.
type State struct {
	Version     int               `json:"version"`
	CIDRs       []netip.Prefix    `json:"cidrs"`
	LastIPv4    netip.Addr        `json:"lastIPv4,omitzero"`
	LastIPv6    netip.Addr        `json:"lastIPv6,omitzero"`
	Allocations []StateAllocation `json:"allocations"`
}

// StateAllocation is one attachment in the state file.
type StateAllocation struct {
	ContainerID  string     `json:"containerID"`
	Ifname       string     `json:"ifname"`
	IPv4         netip.Addr `json:"ipv4,omitzero"`
	IPv6         netip.Addr `json:"ipv6,omitzero"`
	PodNamespace string     `json:"podNamespace,omitempty"`
	PodName      string     `json:"podName,omitempty"`
}

// ParseState decodes and validates a state file. It rejects anything that
// could make the allocator hand out one address twice: duplicate keys,
// duplicate addresses, addresses of the wrong family.
func ParseState(b []byte) (*State, error) {
	if len(b) > maxStateSize {
		return nil, fmt.Errorf("state file larger than %d bytes", maxStateSize)
	}
	var st State
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return nil, errors.New("decode: trailing data after the state object")
	}
	if st.Version != StateVersion {
		return nil, fmt.Errorf("unsupported version %d (want %d)", st.Version, StateVersion)
	}
	for _, c := range st.CIDRs {
		if !c.IsValid() {
			return nil, fmt.Errorf("invalid cidr %v", c)
		}
	}
	if st.LastIPv4.IsValid() && !st.LastIPv4.Is4() {
		return nil, fmt.Errorf("lastIPv4 %s is not IPv4", st.LastIPv4)
	}
	if st.LastIPv6.IsValid() && (!st.LastIPv6.Is6() || st.LastIPv6.Is4In6()) {
		return nil, fmt.Errorf("lastIPv6 %s is not IPv6", st.LastIPv6)
	}
	keys := map[Key]bool{}
	addrs := map[netip.Addr]bool{}
	for i, a := range st.Allocations {
		if a.ContainerID == "" || a.Ifname == "" {
			return nil, fmt.Errorf("allocation %d: empty containerID or ifname", i)
		}
		k := Key{a.ContainerID, a.Ifname}
		if keys[k] {
			return nil, fmt.Errorf("allocation %d: duplicate key %s/%s", i, a.ContainerID, a.Ifname)
		}
		keys[k] = true
		if !a.IPv4.IsValid() && !a.IPv6.IsValid() {
			return nil, fmt.Errorf("allocation %d: no address", i)
		}
		if a.IPv4.IsValid() && !a.IPv4.Is4() {
			return nil, fmt.Errorf("allocation %d: ipv4 %s is not IPv4", i, a.IPv4)
		}
		if a.IPv6.IsValid() && (!a.IPv6.Is6() || a.IPv6.Is4In6() || a.IPv6.Zone() != "") {
			return nil, fmt.Errorf("allocation %d: ipv6 %s is not a global IPv6 address", i, a.IPv6)
		}
		for _, ip := range []netip.Addr{a.IPv4, a.IPv6} {
			if !ip.IsValid() {
				continue
			}
			if addrs[ip] {
				return nil, fmt.Errorf("allocation %d: address %s allocated twice", i, ip)
			}
			addrs[ip] = true
		}
	}
	return &st, nil
}

// Marshal encodes the state deterministically (allocations sorted by key).
func (st *State) Marshal() ([]byte, error) {
	cp := *st
	cp.Allocations = slices.Clone(st.Allocations)
	slices.SortFunc(cp.Allocations, func(x, y StateAllocation) int {
		return compareKeys(Key{x.ContainerID, x.Ifname}, Key{y.ContainerID, y.Ifname})
	})
	if cp.Allocations == nil {
		cp.Allocations = []StateAllocation{}
	}
	b, err := json.MarshalIndent(&cp, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
