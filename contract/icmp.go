package contract

import "strconv"

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

// ICMPTypeCode names an ICMP type and code as Hubble does (gopacket's
// ICMPv4TypeCode/ICMPv6TypeCode String): the words after "ICMPv4 " in a
// flow's summary, and the type label of hubble_icmp_total.
func ICMPTypeCode(v6 bool, t, c uint8) string {
	types := icmpv4Types
	if v6 {
		types = icmpv6Types
	}
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
