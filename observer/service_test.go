package observer

import (
	"net/netip"
	"testing"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// TestTranslatedServiceFromEvent: after DNAT the packet holds the backend's
// address, so the Service comes from the record's ServiceID (the datapath's
// TestPrivilegedServiceTranslation produces such records): destination on
// the request, source on the reply.
func TestTranslatedServiceFromEvent(t *testing.T) {
	d := NewDecoder("node-1", nil, nil, func(uint32) string { return "lxc" })
	d.serviceByID = func(id uint32) (string, string, bool) { return "shop", "web", id == 7 }
	ev := &datapath.Event{Type: contract.MessageTypeTrace, ObsPoint: contract.TraceFromLxc, Verdict: contract.VerdictForwarded,
		Proto: 6, TCPFlags: 0x02, Flags: datapath.FlagCTNew, Direction: contract.DirectionEgress,
		Src: netip.MustParseAddr("10.0.1.11"), Dst: netip.MustParseAddr("10.0.1.10"), SrcPort: 40000, DstPort: 8080, ServiceID: 7}
	f, err := d.DecodeFlow(datapath.MustEncodeEvent(ev))
	if err != nil {
		t.Fatal(err)
	}
	if s := f.GetDestinationService(); s.GetNamespace() != "shop" || s.GetName() != "web" || f.GetSourceService() != nil {
		t.Fatalf("request: destination service %v, source service %v", s, f.GetSourceService())
	}
	rep := *ev
	rep.Src, rep.Dst, rep.SrcPort, rep.DstPort = ev.Dst, ev.Src, ev.DstPort, ev.SrcPort
	rep.Flags, rep.ObsPoint, rep.Direction, rep.TCPFlags = datapath.FlagReply, contract.TraceToLxc, contract.DirectionIngress, 0x12
	if f, err = d.DecodeFlow(datapath.MustEncodeEvent(&rep)); err != nil {
		t.Fatal(err)
	}
	if s := f.GetSourceService(); s.GetName() != "web" || f.GetDestinationService() != nil {
		t.Fatalf("reply: source service %v, destination service %v", s, f.GetDestinationService())
	}
	ev.ServiceID = 8 // unknown id: no Service
	if f, _ = d.DecodeFlow(datapath.MustEncodeEvent(ev)); f.GetDestinationService() != nil {
		t.Fatalf("unknown id named %v", f.GetDestinationService())
	}
}
