package datapath

import "fmt"

// The kernel-drop tracepoint's pins: the program under progs/ and its link
// under tracing/ (links/ holds one folder per interface).
const (
	PinKfreeSkb = "kfree_skb"
	tracingDir  = "tracing"

	MapKernelDropDeny = "kdrop_deny"

	// kernelDropDenySlots is KDROP_DENY_SLOTS of bpf/kdrop.c: reasons at or
	// above it cannot be denied.
	kernelDropDenySlots = 1024

	DefaultKernelDropEventsPerSecond = 1000
)

// KernelDropConfig configures LoadKernelDrops.
type KernelDropConfig struct {
	// BPFRoot is the datapath's (Load must have run): the tracepoint writes
	// the same pinned events ring.
	BPFRoot string
	// EventsPerSecond limits kernel-drop events for the node, split evenly
	// across CPUs like DropEventsPerSecond. 0 = default.
	EventsPerSecond uint32
	// Deny are the reason values (enum skb_drop_reason) not reported.
	Deny []uint32
}

// KernelDrops is the loaded skb:kfree_skb tracepoint of one agent.
type KernelDrops struct {
	objs kdropObjects
}

// LoadKernelDrops loads the kfree_skb tracepoint program against the maps
// pinned under cfg.BPFRoot, pins it and attaches it. A restart attaches the
// new program before it detaches the old one, so no drop goes unseen
// (one may be seen twice, at the switch).
func LoadKernelDrops(cfg KernelDropConfig) (*KernelDrops, error) {
	rate := uint64(cfg.EventsPerSecond)
	if rate == 0 {
		rate = DefaultKernelDropEventsPerSecond
	}
	l := tracingLoad{what: "kernel drops", spec: loadKdrop, rate: rate, rateVars: [2]string{kdropVarKdropEvRate, kdropVarKdropEvBurst}}
	k := &KernelDrops{}
	if err := l.load(cfg.BPFRoot, &k.objs, func() error {
		if err := k.SetDeny(cfg.Deny); err != nil {
			return err
		}
		return k.attach(cfg.BPFRoot)
	}); err != nil {
		return nil, err
	}
	return k, nil
}

func (k *KernelDrops) attach(root string) error {
	return attachTracing(root, PinKfreeSkb, k.objs.LoupeKfreeSkb)
}

// SetDeny replaces the deny-list: drops of these reason values are not
// reported. Values at or above the map's size cannot be denied.
func (k *KernelDrops) SetDeny(reasons []uint32) error {
	deny := make([]uint8, kernelDropDenySlots)
	for _, r := range reasons {
		if r >= kernelDropDenySlots {
			return fmt.Errorf("kernel drop deny-list: reason %d is beyond the %d the datapath can deny", r, kernelDropDenySlots)
		}
		deny[r] = 1
	}
	keys := make([]uint32, kernelDropDenySlots)
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := k.objs.KdropDeny.BatchUpdate(keys, deny, nil); err != nil {
		// Batch ops came late to arrays on some kernels: one by one.
		for i := range keys {
			if err := k.objs.KdropDeny.Put(keys[i], deny[i]); err != nil {
				return fmt.Errorf("kernel drop deny-list: %w", err)
			}
		}
	}
	return nil
}

// Close releases this process's handles; the pinned link stays attached.
func (k *KernelDrops) Close() error {
	if err := k.objs.Close(); err != nil {
		return fmt.Errorf("close kernel drops: %w", err)
	}
	return nil
}

// SetKernelDropsAttached detaches the pinned kfree_skb tracepoint (on false)
// or attaches the pinned program again (on true), leaving its maps alone:
// for benchmarks that measure the machine with and without it. Attaching
// when it is attached is a no-op.
func SetKernelDropsAttached(bpfRoot string, on bool) error {
	return setTracingAttached(bpfRoot, PinKfreeSkb, on)
}
