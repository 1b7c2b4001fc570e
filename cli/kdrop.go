package cli

import (
	"slices"
	"strings"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// kernelDropPrefix is the prefix of the kernel's drop reason names.
const kernelDropPrefix = contract.KernelDropReasonPrefix

// kernelDropFilter selects kernel drops (contract/kerneldrop.go). No
// FlowFilter field can say "kernel drop", so the server is asked for drops
// only and the CLI keeps the kernel's: the filters work the same against
// an agent, loupe-relay or Hubble Relay, and hubble's own flags are
// untouched. --last N counts drops before this filter, so fewer than N
// kernel drops may print.
type kernelDropFilter struct {
	only    bool
	reasons []string
}

func (k *kernelDropFilter) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&k.only, "kernel-drops", false, "Show only packets the kernel dropped (outside loupe's programs), with the kernel's reason")
	fs.StringArrayVar(&k.reasons, "kernel-drop-reason", nil, "Show only kernel drops of this reason, as the kernel names it, with or without SKB_DROP_REASON_ (e.g. NO_SOCKET); repeat for several")
}

func (k *kernelDropFilter) active() bool { return k.only || len(k.reasons) > 0 }

// eventTypes are the event types the server is asked for: drops, which
// kernel drops are.
func (k *kernelDropFilter) eventTypes() []int32 {
	if !k.active() {
		return nil
	}
	return []int32{contract.MessageTypeDrop}
}

// narrowEvents restricts the whitelist to the given event types: every
// whitelist filter without event types gets them, or, with no filter, a
// filter of its own does. No types: the whitelist is unchanged.
func narrowEvents(wl []*flowpb.FlowFilter, types ...int32) []*flowpb.FlowFilter {
	if len(types) == 0 {
		return wl
	}
	var et []*flowpb.EventTypeFilter
	for _, t := range types {
		et = append(et, &flowpb.EventTypeFilter{Type: t})
	}
	if len(wl) == 0 {
		return []*flowpb.FlowFilter{{EventType: et}}
	}
	out := make([]*flowpb.FlowFilter, 0, len(wl))
	for _, f := range wl {
		f = proto.Clone(f).(*flowpb.FlowFilter)
		if len(f.EventType) == 0 {
			f.EventType = et
		}
		out = append(out, f)
	}
	return out
}

// match tells whether a flow passes the kernel-drop flags.
func (k *kernelDropFilter) match(f *flowpb.Flow) bool {
	if !k.active() {
		return true
	}
	kd := contract.KernelDrop(f)
	if kd == nil {
		return false
	}
	if len(k.reasons) == 0 {
		return true
	}
	got := strings.TrimPrefix(kd[contract.ExtKernelReason].GetStringValue(), kernelDropPrefix)
	return slices.ContainsFunc(k.reasons, func(r string) bool {
		return strings.EqualFold(strings.TrimPrefix(strings.ToUpper(strings.TrimSpace(r)), kernelDropPrefix), got)
	})
}

// kernelDropType is the TYPE column of a kernel drop: "kernel:NO_SOCKET".
func kernelDropType(f *flowpb.Flow) (string, bool) {
	kd := contract.KernelDrop(f)
	if kd == nil {
		return "", false
	}
	return "kernel:" + clean(strings.TrimPrefix(kd[contract.ExtKernelReason].GetStringValue(), kernelDropPrefix)), true
}
