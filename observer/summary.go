package observer

import (
	"strconv"
	"strings"
)

// Summaries are the strings Hubble's L3/L4 parser prints, precomputed so
// that no flow formats one.

// tcpFlagNames follows the bit order of the TCP header flags byte.
var tcpFlagNames = [8]string{"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}

// tcpSummaries[flags] is "TCP Flags: SYN, ACK" in Hubble's order
// (SYN, ACK, RST, FIN, PSH, URG, ECE, CWR).
var tcpSummaries = func() (t [256]string) {
	order := []int{1, 4, 2, 0, 3, 5, 6, 7}
	for f := range 256 {
		var names []string
		for _, bit := range order {
			if f&(1<<bit) != 0 {
				names = append(names, tcpFlagNames[bit])
			}
		}
		t[f] = "TCP Flags: " + strings.Join(names, ", ")
	}
	return t
}()

type icmpType struct {
	name  string
	codes map[uint8]string // nil: the type does not use codes
}

var icmpv4Types = map[uint8]icmpType{
	0: {"EchoReply", nil},
	3: {"DestinationUnreachable", map[uint8]string{
		0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
		5: "SourceRoutingFailed", 6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated",
		9: "NetAdminProhibited", 10: "HostAdminProhibited", 11: "NetTOS", 12: "HostTOS",
		13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff",
	}},
	4:  {"SourceQuench", nil},
	5:  {"Redirect", map[uint8]string{0: "Net", 1: "Host", 2: "TOS+Net", 3: "TOS+Host"}},
	8:  {"EchoRequest", nil},
	9:  {"RouterAdvertisement", nil},
	10: {"RouterSolicitation", nil},
	11: {"TimeExceeded", map[uint8]string{0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	12: {"ParameterProblem", map[uint8]string{0: "PointerIndicatesError", 1: "MissingOption", 2: "BadLength"}},
	13: {"TimestampRequest", nil},
	14: {"TimestampReply", nil},
	15: {"InfoRequest", nil},
	16: {"InfoReply", nil},
	17: {"AddressMaskRequest", nil},
	18: {"AddressMaskReply", nil},
}

var icmpv6Types = map[uint8]icmpType{
	1: {"DestinationUnreachable", map[uint8]string{
		0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc", 3: "AddressUnreachable",
		4: "PortUnreachable", 5: "SrcAddressFailedPolicy", 6: "RejectRouteToDst",
	}},
	2:   {"PacketTooBig", nil},
	3:   {"TimeExceeded", map[uint8]string{0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}},
	4:   {"ParameterProblem", map[uint8]string{0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader", 2: "UnrecognizedIPv6Option"}},
	128: {"EchoRequest", nil},
	129: {"EchoReply", nil},
	133: {"RouterSolicitation", nil},
	134: {"RouterAdvertisement", nil},
	135: {"NeighborSolicitation", nil},
	136: {"NeighborAdvertisement", nil},
	137: {"Redirect", nil},
}

func icmpTypeCode(types map[uint8]icmpType, t, c uint8) string {
	info, ok := types[t]
	switch {
	case !ok:
		return strconv.Itoa(int(t)) + "(" + strconv.Itoa(int(c)) + ")"
	case info.codes == nil && c == 0:
		return info.name
	}
	if name, ok := info.codes[c]; ok {
		return info.name + "(" + name + ")"
	}
	return info.name + "(Code: " + strconv.Itoa(int(c)) + ")"
}

// icmpSummaries[v6][type][code] caches "ICMPv4 EchoRequest" and the like
// for the codes that occur in practice.
var icmpSummaries = func() (t [2][256][16]string) {
	for ty := range 256 {
		for c := range 16 {
			t[0][ty][c] = "ICMPv4 " + icmpTypeCode(icmpv4Types, uint8(ty), uint8(c))
			t[1][ty][c] = "ICMPv6 " + icmpTypeCode(icmpv6Types, uint8(ty), uint8(c))
		}
	}
	return t
}()

func icmpSummary(v6 bool, ty, code uint8) string {
	i, types, prefix := 0, icmpv4Types, "ICMPv4 "
	if v6 {
		i, types, prefix = 1, icmpv6Types, "ICMPv6 "
	}
	if code < 16 {
		return icmpSummaries[i][ty][code]
	}
	return prefix + icmpTypeCode(types, ty, code)
}
