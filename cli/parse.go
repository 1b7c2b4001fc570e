package cli

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"github.com/loupe-project/loupe/contract"
)

// Parsers for user-supplied flag values. Each returns exactly the value the
// stock hubble CLI would put into the FlowFilter for the same input, and a
// clear error (naming the accepted values) where hubble would send garbage to
// the server or fail with a terse message.

// flowTypeHelp lists the types (and trace sub-types) in the --type help text.
func flowTypeHelp() string {
	var b strings.Builder
	b.WriteString("TYPE[:SUBTYPE], TYPE one of: capture, drop, l7, policy-verdict, trace, trace-sock, or a number.\n")
	b.WriteString("SUBTYPE of trace: ")
	names := make([]string, 0, len(contract.TraceObservationPointNames))
	for _, n := range contract.TraceObservationPointNames {
		names = append(names, n)
	}
	slices.Sort(names)
	b.WriteString(strings.Join(names, ", "))
	b.WriteString("; any type also takes a numeric SUBTYPE (e.g. drop:133)")
	return b.String()
}

// parseEventType parses TYPE[:SUBTYPE] for --type.
func parseEventType(val string) (*flowpb.EventTypeFilter, error) {
	typ, sub, hasSub := strings.Cut(val, ":")
	f := &flowpb.EventTypeFilter{}
	if t, ok := contract.MessageTypeNames[typ]; ok {
		f.Type = t
	} else {
		n, err := strconv.ParseUint(typ, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("unknown event type %q: want one of capture, drop, l7, policy-verdict, trace, trace-sock, agent, debug, or a number", typ)
		}
		// Hubble stores the number as int32 even when it overflows; keep that.
		f.Type = int32(n)
	}
	if !hasSub {
		return f, nil
	}
	var names []string
	switch f.Type {
	case contract.MessageTypeTrace:
		names = contract.TraceObservationPointNames
	case contract.MessageTypeAgent:
		names = contract.AgentNotificationNames
	}
	if i := slices.Index(names, sub); i >= 0 {
		f.MatchSubType = true
		f.SubType = int32(i)
		return f, nil
	}
	n, err := strconv.ParseUint(sub, 10, 32)
	if err != nil {
		if len(names) > 0 {
			return nil, fmt.Errorf("unknown sub-type %q of %q: want a number or one of %s", sub, typ, strings.Join(names, ", "))
		}
		return nil, fmt.Errorf("unknown sub-type %q of %q: want a number", sub, typ)
	}
	f.MatchSubType = true
	f.SubType = int32(n)
	return f, nil
}

// parseTCPFlags parses a comma-separated set of TCP flags for --tcp-flags;
// all of them must be set on a flow for it to match.
func parseTCPFlags(val string) (*flowpb.TCPFlags, error) {
	fl := &flowpb.TCPFlags{}
	for name := range strings.SplitSeq(val, ",") {
		switch strings.ToUpper(name) {
		case "SYN":
			fl.SYN = true
		case "ACK":
			fl.ACK = true
		case "FIN":
			fl.FIN = true
		case "RST":
			fl.RST = true
		case "PSH":
			fl.PSH = true
		case "URG":
			fl.URG = true
		case "ECE":
			fl.ECE = true
		case "CWR":
			fl.CWR = true
		case "NS":
			fl.NS = true
		default:
			return nil, fmt.Errorf("unknown TCP flag %q: want a comma-separated list of SYN, ACK, FIN, RST, PSH, URG, ECE, CWR, NS", name)
		}
	}
	return fl, nil
}

// reservedIdentities are Cilium's reserved security identities, by number.
var reservedIdentities = map[uint32]string{
	0:  "unknown",
	1:  "host",
	2:  "world",
	3:  "unmanaged",
	4:  "health",
	5:  "init",
	6:  "remote-node",
	7:  "kube-apiserver",
	8:  "ingress",
	9:  "world-ipv4",
	10: "world-ipv6",
	11: "aggregate-cluster",
	12: "aggregate-cluster-mesh",
	13: "aggregate-world",
	14: "aggregate-remote-node",
}

func reservedIdentityNames() []string {
	var names []string
	for id, n := range reservedIdentities {
		if id != 0 { // "unknown" is printed but not accepted, as in hubble
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// parseIdentity parses a reserved identity name or a number (decimal, 0x,
// 0o or 0b, as hubble accepts).
func parseIdentity(val string) (uint32, error) {
	for id, n := range reservedIdentities {
		if id != 0 && n == val {
			return id, nil
		}
	}
	n, err := strconv.ParseUint(val, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid identity %q: want a number or one of %s", val, strings.Join(reservedIdentityNames(), ", "))
	}
	return uint32(n), nil
}

// parseWorkload parses [KIND/]NAME for --workload; either part may be empty.
func parseWorkload(val string) *flowpb.Workload {
	kind, name, ok := strings.Cut(val, "/")
	if !ok {
		return &flowpb.Workload{Name: val}
	}
	return &flowpb.Workload{Kind: kind, Name: name}
}

// validateIP accepts an address or a CIDR prefix, like the Hubble server.
func validateIP(val string) error {
	if strings.Contains(val, "/") {
		if _, err := netip.ParsePrefix(val); err != nil {
			return fmt.Errorf("invalid CIDR %q: want e.g. 10.0.0.0/8 or fd00::/64", val)
		}
		return nil
	}
	if _, err := netip.ParseAddr(val); err != nil {
		return fmt.Errorf("invalid IP address %q: want an IPv4 or IPv6 address or a CIDR", val)
	}
	return nil
}

func validatePort(val string) error {
	if _, err := strconv.ParseUint(val, 10, 16); err != nil {
		return fmt.Errorf("invalid port %q: want a number from 0 to 65535", val)
	}
	return nil
}

// knownProtocols are the protocols a Hubble server filters on.
var knownProtocols = []string{"tcp", "udp", "sctp", "icmp", "icmpv4", "icmpv6", "vrrp", "igmp", "dns", "http"}

func validateProtocol(val string) error {
	if !slices.Contains(knownProtocols, strings.ToLower(val)) {
		return fmt.Errorf("unknown protocol %q: want one of %s", val, strings.Join(knownProtocols, ", "))
	}
	return nil
}

func parseVerdict(val string) (flowpb.Verdict, error) {
	if v, ok := flowpb.Verdict_value[strings.ToUpper(val)]; ok {
		return flowpb.Verdict(v), nil
	}
	return 0, fmt.Errorf("unknown verdict %q: want one of %s", val, strings.Join(verdictNames(), ", "))
}

func verdictNames() []string {
	return []string{
		flowpb.Verdict_FORWARDED.String(), flowpb.Verdict_DROPPED.String(), flowpb.Verdict_AUDIT.String(),
		flowpb.Verdict_REDIRECTED.String(), flowpb.Verdict_ERROR.String(), flowpb.Verdict_TRACED.String(),
		flowpb.Verdict_TRANSLATED.String(),
	}
}

func parseDropReason(val string) (flowpb.DropReason, error) {
	if val == "" {
		return 0, fmt.Errorf("empty drop reason: want a name such as POLICY_DENIED")
	}
	if v, ok := flowpb.DropReason_value[strings.ToUpper(val)]; ok {
		return flowpb.DropReason(v), nil
	}
	return 0, fmt.Errorf("unknown drop reason %q: want a name such as POLICY_DENIED, INVALID_SOURCE_IP, INVALID_PACKET_DROPPED", val)
}

func parseTrafficDirection(val string) (flowpb.TrafficDirection, error) {
	switch strings.ToLower(val) {
	case "ingress":
		return flowpb.TrafficDirection_INGRESS, nil
	case "egress":
		return flowpb.TrafficDirection_EGRESS, nil
	}
	return 0, fmt.Errorf("unknown traffic direction %q: want ingress or egress", val)
}

func parseIPVersion(val string) (flowpb.IPVersion, error) {
	switch strings.ToLower(val) {
	case "4", "v4", "ipv4", "ip4":
		return flowpb.IPVersion_IPv4, nil
	case "6", "v6", "ipv6", "ip6":
		return flowpb.IPVersion_IPv6, nil
	case "none", "0":
		return flowpb.IPVersion_IP_NOT_USED, nil
	}
	return 0, fmt.Errorf("unknown IP version %q: want v4, v6 or none", val)
}

// timeLayouts are the absolute forms --since and --until accept, in the
// order they are tried.
var timeLayouts = []string{
	"2006-01-02",
	"2006-01-02T15Z07:00",
	"2006-01-02T15:04Z07:00",
	time.RFC3339,
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999Z07:00",
	"2006-01-02T15:04:05.999999Z07:00",
	time.RFC1123Z,
}

// parseTime parses --since/--until: a duration into the past (5m, 1h30m) or
// an absolute time (RFC3339 and its shorter and longer forms).
func parseTime(val string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(val); err == nil {
		return now.Add(-d), nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, val); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid time %q: want a duration into the past (30s, 5m, 2h) or a time such as 2006-01-02T15:04:05Z07:00", val)
}

// timeFormatLayout maps a --time-format name to a layout.
func timeFormatLayout(name string) (string, error) {
	switch strings.ToLower(name) {
	case "stampmilli", "":
		return time.StampMilli, nil
	case "yearmonthday":
		return "2006-01-02", nil
	case "yearmonthdayhour":
		return "2006-01-02T15Z07:00", nil
	case "yearmonthdayhourminute":
		return "2006-01-02T15:04Z07:00", nil
	case "rfc3339":
		return time.RFC3339, nil
	case "rfc3339milli":
		return "2006-01-02T15:04:05.999Z07:00", nil
	case "rfc3339micro":
		return "2006-01-02T15:04:05.999999Z07:00", nil
	case "rfc3339nano":
		return time.RFC3339Nano, nil
	case "rfc1123z":
		return time.RFC1123Z, nil
	}
	return "", fmt.Errorf("unknown time format %q: want StampMilli, RFC3339, RFC3339Milli, RFC3339Micro, RFC3339Nano, RFC1123Z, YearMonthDay, YearMonthDayHour or YearMonthDayHourMinute", name)
}

// maxLast is --all: every flow in the buffer.
const maxLast = math.MaxUint64
