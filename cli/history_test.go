package cli

import (
	"math"
	"net/netip"
	"strings"
	"testing"
	"time"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/history"
	"github.com/loupe-project/loupe/observer/observertest"
)

// Two hours of flows, one a second, stamped as if they had happened over
// the last two hours (the test's time compression), through an agent whose
// ring holds 1023: `loupe observe --since 90m --until 60m` returns exactly
// the flows of that half hour, from its history.
func TestObserveHistoryWindow(t *testing.T) {
	st, err := history.Open(history.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	o, err := observer.New(observer.Config{NodeName: "n1", BufferSize: 1023, History: st, LinkName: func(uint32) string { return "lxc" }})
	if err != nil {
		t.Fatal(err)
	}
	addr := observertest.Serve(t, o)

	// Flow i at now-2h+i s+0.5 s: the half second keeps the window's ends
	// clear of the few milliseconds between this clock and the CLI's.
	start := time.Now().Add(-2*time.Hour).UnixNano() - observer.BootOffset()
	if start < 0 {
		t.Skip("the machine booted less than two hours ago")
	}
	for i := 0; i < 7200; i++ {
		o.HandleEvent(datapath.MustEncodeEvent(&datapath.Event{
			TimestampNS: uint64(start) + uint64(i)*1e9 + 5e8, Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc,
			Verdict: contract.VerdictForwarded, Proto: 6, TCPFlags: 0x02, Flags: 2, EndpointID: 1,
			Src: netip.MustParseAddr("10.0.1.1"), Dst: netip.MustParseAddr("10.0.2.2"), SrcPort: uint16(20000 + i), DstPort: 80,
			Direction: contract.DirectionEgress, PacketLen: 60,
		}))
		if i%500 == 499 {
			for !o.HistoryCaughtUp() {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	// Filling took seconds: the window moved on since. Start the CLI 50 ms
	// past a whole second of the flows' clock, so the flows at its ends are
	// known.
	base := time.Unix(0, start+observer.BootOffset())
	time.Sleep((time.Second - time.Since(base)%time.Second + 50*time.Millisecond) % time.Second)
	first := int(math.Ceil((time.Since(base) - 90*time.Minute).Seconds() - 0.5))
	out, stderr, err := run(t, NewObserveCommand(), "--server", addr, "-o", "json", "--since", "90m", "--until", "60m")
	if err != nil {
		t.Fatalf("%v: %s", err, stderr)
	}
	flows := parseJSONFlows(t, out)
	if len(flows) != 1800 {
		t.Fatalf("%d flows, want the 1800 of the window", len(flows))
	}
	for i, f := range flows {
		if got, want := f.GetL4().GetTCP().GetSourcePort(), uint32(20000+first+i); got != want {
			t.Fatalf("flow %d: source port %d, want %d", i, got, want)
		}
	}
}

// parseJSONFlows reads `-o json` output: one GetFlowsResponse a line.
func parseJSONFlows(t *testing.T, out string) []*flowpb.Flow {
	t.Helper()
	var flows []*flowpb.Flow
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		r := &observerpb.GetFlowsResponse{}
		if err := protojson.Unmarshal([]byte(line), r); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if r.GetLostEvents() != nil {
			t.Fatalf("lost events: %v", r.GetLostEvents())
		}
		if f := r.GetFlow(); f != nil {
			flows = append(flows, f)
		}
	}
	return flows
}
