package cli

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/observertest"
)

// `loupe observe --aggregate` against a real observer prints one line per
// edge with its count.
func TestObserveAggregate(t *testing.T) {
	o, err := observer.New(observer.Config{NodeName: "n1", BufferSize: 1023, LinkName: func(uint32) string { return "lxc" }})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		o.HandleEvent(datapath.MustEncodeEvent(&datapath.Event{
			TimestampNS: uint64(1000+i) * 1e9, Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc,
			Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x02, Flags: 2, EndpointID: 1,
			Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.2.2"), SrcPort: uint16(30000 + i), DstPort: uint16(80 + i%3),
			Direction: contract.DirectionEgress, PacketLen: 60,
		}))
	}
	addr := observertest.Serve(t, o)

	out, stderr, err := run(t, NewObserveCommand(), "--server", addr, "--aggregate", "--since", "87600h")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SOURCE") {
		t.Fatalf("output:\n%s", out)
	}
	for i, port := range []string{"80", "81", "82"} {
		f := strings.Fields(lines[i+1])
		if f[0] != "reserved:world" || f[1] != "reserved:world" || f[2] != port || f[3] != "TCP" || f[4] != "FORWARDED" || f[5] != "10" {
			t.Errorf("line %d: %q", i+1, lines[i+1])
		}
	}
	for _, bad := range [][]string{{"--aggregate"}, {"--aggregate", "--since", "1h", "-f"}, {"--aggregate", "--since", "1h", "--last", "3"}} {
		if _, _, err := run(t, NewObserveCommand(), append([]string{"--server", addr}, bad...)...); err == nil || !strings.Contains(err.Error(), "--aggregate") {
			t.Errorf("%v: want an error about --aggregate, got %v", bad, err)
		}
	}
}
