package cli

import (
	"fmt"
	"strings"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// connectionSummary is what loupe's text formats add to a flow that
// carries a connection's counters (contract/connection.go):
// "; sent 70 pkts 1.0 MB, received 40 pkts 2.6 kB, handshake 84µs".
// "sent" is the client's direction. Empty for other flows.
func connectionSummary(f *flowpb.Flow) string {
	c := contract.Connection(f)
	if c == nil {
		return ""
	}
	n := func(k string) uint64 { return uint64(c[k].GetNumberValue()) }
	var b strings.Builder
	fmt.Fprintf(&b, "; sent %d pkts %s, received %d pkts %s",
		n(contract.ExtConnPacketsSent), humanBytes(n(contract.ExtConnBytesSent)),
		n(contract.ExtConnPacketsReceived), humanBytes(n(contract.ExtConnBytesReceived)))
	if ns := n(contract.ExtConnHandshakeNS); ns > 0 {
		b.WriteString(", handshake " + time.Duration(ns).Round(time.Microsecond).String())
	}
	return b.String()
}

// humanBytes prints a byte count in SI units, three significant digits.
func humanBytes(v uint64) string {
	if v < 1000 {
		return fmt.Sprintf("%d B", v)
	}
	f, units := float64(v), []string{"kB", "MB", "GB", "TB", "PB"}
	i := -1
	for f >= 1000 && i < len(units)-1 {
		f /= 1000
		i++
	}
	return fmt.Sprintf("%.3g %s", f, units[i])
}
