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

// narrow restricts the whitelist to drop events, which kernel drops are:
// every whitelist filter also requires event type drop, or, with none, a
// filter of its own does.
func (k *kernelDropFilter) narrow(wl []*flowpb.FlowFilter) []*flowpb.FlowFilter {
	if !k.active() {
		return wl
	}
	drop := &flowpb.EventTypeFilter{Type: contract.MessageTypeDrop}
	if len(wl) == 0 {
		return []*flowpb.FlowFilter{{EventType: []*flowpb.EventTypeFilter{drop}}}
	}
	out := make([]*flowpb.FlowFilter, 0, len(wl))
	for _, f := range wl {
		f = proto.Clone(f).(*flowpb.FlowFilter)
		if len(f.EventType) == 0 {
			f.EventType = []*flowpb.EventTypeFilter{drop}
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
