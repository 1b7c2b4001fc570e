package observer

import (
	"fmt"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
)

// tcpEventKind names a TCP tracepoint record (contract.TCPEvent*), or ""
// when the record is not one.
func tcpEventKind(ev *datapath.Event) string {
	switch {
	case ev.Flags&datapath.FlagTCPRetransmit != 0:
		return contract.TCPEventRetransmit
	case ev.Flags&datapath.FlagTCPReset != 0 && ev.Direction == contract.DirectionIngress:
		return contract.TCPEventResetReceived
	case ev.Flags&datapath.FlagTCPReset != 0:
		return contract.TCPEventResetSent
	}
	return ""
}

// tcpEvent fills a TCP health record's flow (contract/tcp.go): a FORWARDED
// trace from or to the stack, placed like a kernel drop, with the "tcp"
// extension. It returns the attribution.
func (d *Decoder) tcpEvent(b *flowBlock, ev *datapath.Event, ep *NetnsEndpoint, kind string) string {
	f := &b.flow
	f.Verdict = flowpb.Verdict_FORWARDED
	b.etype.Type = contract.MessageTypeTrace
	obs := uint8(contract.TraceFromStack)
	if kind == contract.TCPEventResetReceived {
		obs = contract.TraceToStack
	}
	b.etype.SubType = int32(obs)
	f.EventType = &b.etype
	f.TraceObservationPoint = contract.TraceObservationPoint(obs)
	if t, ok := f.L4.GetProtocol().(*flowpb.Layer4_TCP); ok {
		// loupe's packet programs report the segment's flags; counting
		// them again here would double Hubble's TCP flag metrics.
		t.TCP.Flags = nil
	}
	attributed := d.placeKernel(b, ev, ep)
	fields := map[string]*structpb.Value{
		contract.ExtTCPEvent:        structpb.NewStringValue(kind),
		contract.ExtTCPNetnsInode:   structpb.NewNumberValue(float64(ev.NetnsIno)),
		contract.ExtTCPAttributedBy: structpb.NewStringValue(attributed),
	}
	d.kreason = ""
	switch kind {
	case contract.TCPEventRetransmit:
		fields[contract.ExtTCPSegments] = structpb.NewNumberValue(float64(ev.PacketsFwd))
		fields[contract.ExtTCPBytes] = structpb.NewNumberValue(float64(ev.BytesFwd))
		fields[contract.ExtTCPConnRetrans] = structpb.NewNumberValue(float64(ev.PacketsRev))
		fl := strings.TrimPrefix(tcpSummaries[ev.TCPFlags], "TCP Flags: ")
		if fl != "" {
			fields[contract.ExtTCPFlags] = structpb.NewStringValue(fl)
			fl = " " + fl
		}
		f.Summary = fmt.Sprintf("TCP retransmission of %d%s segment(s), %d on the connection", ev.PacketsFwd, fl, ev.PacketsRev)
	case contract.TCPEventResetSent:
		reason := d.kernel.ResetReason(ev.KernelReason)
		d.kreason = reason
		fields[contract.ExtTCPReason] = structpb.NewStringValue(reason)
		fields[contract.ExtTCPReasonCode] = structpb.NewNumberValue(float64(ev.KernelReason))
		f.Summary = "TCP reset sent, " + reason
	default:
		f.Summary = "TCP reset received"
	}
	setExtension(f, contract.ExtTCP, &structpb.Struct{Fields: fields})
	return attributed
}

// TCPEventOf returns a flow's tcp extension fields, or nil when the flow
// is not a TCP health event.
func TCPEventOf(f *flowpb.Flow) map[string]*structpb.Value { return contract.TCPEvent(f) }
