package daemon

import (
	"fmt"
	"log/slog"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/datapath"
)

// ResetReason names an enum sk_rst_reason value as the running kernel's
// BTF spells it.
func (k *kernelEvents) ResetReason(code uint32) string {
	if s, ok := k.rstReasons[code]; ok {
		return s
	}
	return fmt.Sprintf("%s%d", datapath.ResetReasonPrefix, code)
}

// startTCPEvents attaches the TCP retransmit and reset tracepoints. kev is
// the kernel-drop side's, or nil when kernel drops are off: the TCP side
// then builds its own. Like kernel drops, a kernel that cannot run them
// costs the feature, not the agent.
func startTCPEvents(cfg *Config, dp *datapath.Datapath, ag *agent.Agent, kev *kernelEvents, log *slog.Logger) (*kernelEvents, *datapath.TCPEvents, error) {
	if cfg.NoTCPEvents {
		return kev, nil, nil
	}
	rst, err := datapath.KernelEnum(datapath.EnumSkRstReason)
	if err != nil {
		// Older kernels have no reset reasons: resets are still reported.
		log.Info("tcp reset reasons unknown", "err", err)
	}
	if kev == nil {
		var nodeIno uint64
		if err := cfg.inNetNS(func() error {
			var err error
			nodeIno, err = netnsInode("/proc/thread-self/ns/net")
			return err
		}); err != nil {
			return nil, nil, fmt.Errorf("node netns: %w", err)
		}
		kev = &kernelEvents{nodeIno: nodeIno, syms: datapath.NewKallsyms(""), endpoints: ag.Endpoints, ipcache: dp.LookupIPCache,
			inNetNS: cfg.inNetNS}
	}
	te, err := datapath.LoadTCPEvents(datapath.TCPConfig{BPFRoot: cfg.BPFRoot, EventsPerSecond: cfg.TCPEventsPerSecond})
	if err != nil {
		log.Warn("tcp retransmissions and resets off", "err", err)
		return kev, nil, nil
	}
	kev.rstReasons = rst
	log.Info("tcp retransmissions and resets reported")
	return kev, te, nil
}

// newTCPEventCollector exports the TCP tracepoints' own loss counts.
func newTCPEventCollector(stats func() (datapath.TCPStats, error)) *counterCollector {
	return newCounterCollector("loupe_tcp_events_not_written_total",
		"TCP retransmission and reset events the tracepoints did not hand over: rate_limited (--tcp-events-per-second; sent as LostEvents), no_netns (no socket or device to tie them to)",
		"outcome", func() ([]labeledCount, error) {
			s, err := stats()
			return []labeledCount{{"rate_limited", s.Limited}, {"no_netns", s.NoNetns}}, err
		})
}

// withTCPLosses counts the TCP events the tracepoints' rate limit held
// back with the datapath's rate-limited drop events, so that they reach
// the flow stream as LostEvents the same way. tcp is nil when TCP events
// are off.
func withTCPLosses(stats func() (datapath.EventStats, error), tcp func() (datapath.TCPStats, error)) func() (datapath.EventStats, error) {
	if tcp == nil {
		return stats
	}
	return func() (datapath.EventStats, error) {
		s, err := stats()
		if err != nil {
			return s, err
		}
		ts, err := tcp()
		s.DropEventsLimited += ts.Limited
		return s, err
	}
}
