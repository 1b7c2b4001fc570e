package datapath

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// The TCP health tracepoints' pins: programs under progs/, links under
// tracing/, one per tracepoint.
const (
	PinTCPRetransmit   = "tcp_retransmit_skb"
	PinTCPSendReset    = "tcp_send_reset"
	PinTCPReceiveReset = "tcp_receive_reset"

	// EnumSkRstReason names the reasons of tcp:tcp_send_reset.
	EnumSkRstReason = "sk_rst_reason"
	// ResetReasonPrefix starts every enum sk_rst_reason name.
	ResetReasonPrefix = "SK_RST_REASON_"

	DefaultTCPEventsPerSecond = 1000

	// Slots of the tcp_stats map (TCP_STAT_* in bpf/tcp.c).
	tcpStatLimited = 0
	tcpStatNoNetns = 1
)

// TCPPins are the pin names of the TCP tracepoints, in attach order.
var TCPPins = []string{PinTCPRetransmit, PinTCPSendReset, PinTCPReceiveReset}

// TCPConfig configures LoadTCPEvents.
type TCPConfig struct {
	// BPFRoot is the datapath's (Load must have run): the tracepoints write
	// the same pinned events ring.
	BPFRoot string
	// EventsPerSecond limits TCP events (retransmissions and resets) for
	// the node, split evenly across CPUs. 0 = DefaultTCPEventsPerSecond.
	EventsPerSecond uint32
}

// TCPEvents is one agent's loaded TCP health tracepoints.
type TCPEvents struct {
	objs tcpObjects
}

// TCPStats are the events the tracepoints did not write.
type TCPStats struct {
	Limited uint64 // held back by the rate limit (sent as LostEvents)
	NoNetns uint64 // no socket and no device: no namespace to tie them to
}

// LoadTCPEvents loads the tcp_retransmit_skb, tcp_send_reset and
// tcp_receive_reset tracepoint programs against the maps pinned under
// cfg.BPFRoot, pins and attaches them (as LoadKernelDrops does).
func LoadTCPEvents(cfg TCPConfig) (*TCPEvents, error) {
	rate := uint64(cfg.EventsPerSecond)
	if rate == 0 {
		rate = DefaultTCPEventsPerSecond
	}
	l := tracingLoad{what: "tcp events", spec: loadTcp, rate: rate, rateVars: [2]string{tcpVarTcpEvRate, tcpVarTcpEvBurst}}
	t := &TCPEvents{}
	if err := l.load(cfg.BPFRoot, &t.objs, func() error {
		progs := map[string]*ebpf.Program{
			PinTCPRetransmit:   t.objs.LoupeTcpRetransmit,
			PinTCPSendReset:    t.objs.LoupeTcpSendReset,
			PinTCPReceiveReset: t.objs.LoupeTcpReceiveReset,
		}
		for _, name := range TCPPins {
			if err := attachTracing(cfg.BPFRoot, name, progs[name]); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return t, nil
}

// Stats sums the tracepoints' loss counters over CPUs.
func (t *TCPEvents) Stats() (TCPStats, error) {
	var s TCPStats
	for slot, dst := range map[uint32]*uint64{tcpStatLimited: &s.Limited, tcpStatNoNetns: &s.NoNetns} {
		var vals []uint64
		if err := t.objs.TcpStats.Lookup(slot, &vals); err != nil {
			return s, fmt.Errorf("tcp stats: %w", err)
		}
		for _, v := range vals {
			*dst += v
		}
	}
	return s, nil
}

// Close releases this process's handles; the pinned links stay attached.
func (t *TCPEvents) Close() error {
	if err := t.objs.Close(); err != nil {
		return fmt.Errorf("close tcp events: %w", err)
	}
	return nil
}

// SetTCPEventsAttached detaches (on false) or re-attaches (on true) every
// pinned TCP tracepoint, for benchmarks.
func SetTCPEventsAttached(bpfRoot string, on bool) error {
	var errs []error
	for _, name := range TCPPins {
		errs = append(errs, setTracingAttached(bpfRoot, name, on))
	}
	return errors.Join(errs...)
}
