package observer

import (
	"strings"

	"github.com/loupe-project/loupe/contract"
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

// icmpSummaries[v6][type][code] caches "ICMPv4 EchoRequest" and the like
// for the codes that occur in practice.
var icmpSummaries = func() (t [2][256][16]string) {
	for ty := range 256 {
		for c := range 16 {
			t[0][ty][c] = "ICMPv4 " + contract.ICMPTypeCode(false, uint8(ty), uint8(c))
			t[1][ty][c] = "ICMPv6 " + contract.ICMPTypeCode(true, uint8(ty), uint8(c))
		}
	}
	return t
}()

func icmpSummary(v6 bool, ty, code uint8) string {
	i, prefix := 0, "ICMPv4 "
	if v6 {
		i, prefix = 1, "ICMPv6 "
	}
	if code < 16 {
		return icmpSummaries[i][ty][code]
	}
	return prefix + contract.ICMPTypeCode(v6, ty, code)
}
