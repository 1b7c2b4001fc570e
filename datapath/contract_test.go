package datapath

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/loupe-project/loupe/contract"
)

// goSide is the Go value of every #define in bpf/*.[ch] that Go code also
// knows. Every LOUPE_ #define of event.h must be here, so that a number
// added to the record without a Go counterpart fails too.
var goSide = map[string]uint64{
	// event.h: the record.
	"LOUPE_EVENT_DROP":             contract.MessageTypeDrop,
	"LOUPE_EVENT_TRACE":            contract.MessageTypeTrace,
	"LOUPE_EVENT_POLICY_VERDICT":   contract.MessageTypePolicyVerdict,
	"LOUPE_OBS_TO_LXC":             contract.TraceToLxc,
	"LOUPE_OBS_FROM_LXC":           contract.TraceFromLxc,
	"LOUPE_VERDICT_FORWARDED":      uint64(contract.VerdictForwarded),
	"LOUPE_VERDICT_DROPPED":        uint64(contract.VerdictDropped),
	"LOUPE_DROP_INVALID_SOURCE_IP": uint64(contract.DropInvalidSourceIP),
	"LOUPE_DROP_POLICY_DENIED":     uint64(contract.DropPolicyDenied),
	"LOUPE_DROP_INVALID_PACKET":    uint64(contract.DropInvalidPacket),
	"LOUPE_DROP_NO_SERVICE":        uint64(contract.DropNoService),
	"LOUPE_DIR_INGRESS":            uint64(contract.DirectionIngress),
	"LOUPE_DIR_EGRESS":             uint64(contract.DirectionEgress),
	"LOUPE_EF_REPLY":               uint64(FlagReply),
	"LOUPE_EF_CT_NEW":              uint64(FlagCTNew),
	"LOUPE_EF_PERIODIC":            uint64(FlagPeriodic),
	"LOUPE_EF_XDP":                 uint64(FlagXDP),
	"LOUPE_EF_KERNEL":              uint64(FlagKernel),
	"LOUPE_EF_TCP_RETRANSMIT":      uint64(FlagTCPRetransmit),
	"LOUPE_EF_TCP_RESET":           uint64(FlagTCPReset),
	"LOUPE_MATCH_NONE":             contract.PolicyMatchNone,
	"LOUPE_MATCH_L3_ONLY":          contract.PolicyMatchL3Only,
	"LOUPE_MATCH_L3_L4":            contract.PolicyMatchL3L4,
	"LOUPE_MATCH_L4_ONLY":          contract.PolicyMatchL4Only,
	"LOUPE_MATCH_ALL":              contract.PolicyMatchAll,
	"LOUPE_EVENT_DATA_LEN":         EventDataLen,
	// The maps Go writes and reads.
	"LOUPE_IDENTITY_ANY":       uint64(contract.IdentityUnknown),
	"LOUPE_IDENTITY_WORLD":     uint64(contract.IdentityWorld),
	"LOUPE_REASON_NO_ENDPOINT": uint64(ReasonNoEndpoint),
	"EP_F_POLICY_INGRESS":      uint64(epPolicyIngress),
	"EP_F_POLICY_EGRESS":       uint64(epPolicyEgress),
	"EP_F_HAS_IPV4":            uint64(epHasIPv4),
	"EP_F_HAS_IPV6":            uint64(epHasIPv6),
	"POLICY_ALLOW":             uint64(policyAllow),
	"POLICY_DENY":              uint64(policyDeny),
	"POLICY_PREFIX_FIXED":      policyPrefixFixed,
	"POLICY_PREFIX_PROTO":      policyPrefixProto,
	"POLICY_PREFIX_FULL":       policyPrefixFull,
	"POLICY_F_L4":              policyFlagL4,
	"SVC_F_AFFINITY":           uint64(svcFlagAffinity),
	"SVC_BE_TERMINATING":       uint64(svcBackendTerminating),
	"STAT_RINGBUF_FULL":        statRingbufFull,
	"STAT_DROP_EV_LIMITED":     statDropEventLimited,
	"STAT_KDROP_LIMITED":       statKernelDropLimited,
	"STAT_KDROP_NO_NETNS":      statKernelDropNoNetns,
	"KDROP_DENY_SLOTS":         kernelDropDenySlots,
	"TCP_STAT_LIMITED":         tcpStatLimited,
	"TCP_STAT_NO_NETNS":        tcpStatNoNetns,
}

var defineRE = regexp.MustCompile(`(?m)^#define\s+([A-Z][A-Z0-9_]*)\s+(0x[0-9a-fA-F]+|[0-9]+)\b`)

// headerDefines returns every numeric #define of bpf/*.[ch], by name, with
// the file that holds it.
func headerDefines(t *testing.T) (map[string]uint64, map[string]string) {
	t.Helper()
	files, err := filepath.Glob("bpf/*.[ch]")
	if err != nil || len(files) == 0 {
		t.Fatalf("no headers: %v", err)
	}
	vals, where := map[string]uint64{}, map[string]string{}
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range defineRE.FindAllStringSubmatch(string(src), -1) {
			v, err := strconv.ParseUint(m[2], 0, 64)
			if err != nil {
				t.Fatalf("%s: %s: %v", f, m[1], err)
			}
			if _, dup := vals[m[1]]; dup {
				t.Fatalf("%s defined twice (%s, %s)", m[1], where[m[1]], f)
			}
			vals[m[1]], where[m[1]] = v, filepath.Base(f)
		}
	}
	return vals, where
}

func TestHeaderMatchesContract(t *testing.T) {
	c, where := headerDefines(t)
	for name, want := range goSide {
		got, ok := c[name]
		switch {
		case !ok:
			t.Errorf("%s: Go has %d, no header defines it", name, want)
		case got != want:
			t.Errorf("%s: %s says %d, Go says %d", name, where[name], got, want)
		}
	}
	for name, file := range where {
		if _, ok := goSide[name]; !ok && file == "event.h" {
			t.Errorf("event.h defines %s, which no Go constant mirrors: add it to goSide", name)
		}
	}
}

// TestEventLayoutMatchesBTF reads struct loupe_event from the compiled
// object's BTF, so a field moved in the C (and regenerated) without the Go
// offsets fails.
func TestEventLayoutMatchesBTF(t *testing.T) {
	spec, err := loadLoupe()
	if err != nil {
		t.Fatal(err)
	}
	var s *btf.Struct
	if err := spec.Types.TypeByName("loupe_event", &s); err != nil {
		t.Fatalf("loupe_event in BTF: %v", err)
	}
	if s.Size != EventSize {
		t.Errorf("sizeof(struct loupe_event) = %d, EventSize = %d", s.Size, EventSize)
	}
	want := map[string]uint32{
		"ts_ns": offTimestamp, "type": offType, "obs_point": offObsPoint, "verdict": offVerdict,
		"drop_reason": offDropReason, "family": offFamily, "proto": offProto, "tcp_flags": offTCPFlags,
		"flags": offFlags, "ifindex": offIfindex, "ep_id": offEndpointID, "src_identity": offSrcIdentity,
		"dst_identity": offDstIdentity, "saddr": offSaddr, "daddr": offDaddr, "sport": offSport,
		"dport": offDport, "icmp_type": offICMPType, "icmp_code": offICMPCode, "match_type": offMatchType,
		"direction": offDirection, "policy_id": offPolicyID, "pkt_len": offPacketLen, "cap_len": offCapLen,
		"packets_fwd": offPacketsFwd, "bytes_fwd": offBytesFwd, "packets_rev": offPacketsRev,
		"bytes_rev": offBytesRev, "data": offData, "kernel_reason": offKernReason,
		"netns_ino": offNetnsIno, "location": offLocation, "handshake_ns": offHandshake, "svc_id": offServiceID, "_pad2": offServiceID + 4,
	}
	seen := 0
	for _, m := range s.Members {
		off, ok := want[m.Name]
		if !ok {
			t.Errorf("member %s has no Go offset", m.Name)
			continue
		}
		seen++
		if got := m.Offset.Bytes(); got != off {
			t.Errorf("member %s at %d in BTF, %d in Go", m.Name, got, off)
		}
	}
	if seen != len(want) {
		t.Errorf("BTF has %d of the %d members Go decodes", seen, len(want))
	}
}
