package cli

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	flowpb "github.com/cilium/cilium/api/v1/flow"

	"github.com/loupe-project/loupe/contract"
)

// tcpEventFilter selects TCP health events (contract/tcp.go): trace flows
// with a "tcp" extension. As for kernel drops, the server is asked for
// trace events and the CLI keeps the TCP ones, so it works against an
// agent, loupe-relay or Hubble Relay.
type tcpEventFilter struct {
	only   bool
	events []string
}

var tcpEventNames = []string{contract.TCPEventRetransmit, contract.TCPEventResetSent, contract.TCPEventResetReceived}

func (t *tcpEventFilter) addFlags(fs *pflag.FlagSet) {
	fs.BoolVar(&t.only, "tcp-events", false, "Show only TCP retransmissions and resets, as the kernel's TCP stack reports them")
	fs.StringArrayVar(&t.events, "tcp-event", nil, "Show only TCP events of this kind: "+strings.Join(tcpEventNames, ", ")+"; repeat for several")
}

func (t *tcpEventFilter) active() bool { return t.only || len(t.events) > 0 }

// validate rejects an unknown --tcp-event kind.
func (t *tcpEventFilter) validate() error {
	for _, e := range t.events {
		if !slices.Contains(tcpEventNames, normTCPEvent(e)) {
			return fmt.Errorf("--tcp-event %q: want one of %s", e, strings.Join(tcpEventNames, ", "))
		}
	}
	return nil
}

func normTCPEvent(s string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_")
}

func (t *tcpEventFilter) eventTypes() []int32 {
	if !t.active() {
		return nil
	}
	return []int32{contract.MessageTypeTrace}
}

func (t *tcpEventFilter) match(f *flowpb.Flow) bool {
	x := contract.TCPEvent(f)
	if x == nil {
		return false
	}
	if len(t.events) == 0 {
		return true
	}
	got := x[contract.ExtTCPEvent].GetStringValue()
	return slices.ContainsFunc(t.events, func(e string) bool { return normTCPEvent(e) == got })
}

// matchEventFlags tells whether a flow passes --kernel-drops and
// --tcp-events: with neither, every flow; with both, a flow either keeps.
func matchEventFlags(f *flowpb.Flow, k *kernelDropFilter, t *tcpEventFilter) bool {
	if !k.active() && !t.active() {
		return true
	}
	return (k.active() && k.match(f)) || (t.active() && t.match(f))
}

// tcpEventType is the TYPE column of a TCP event: "tcp:retransmit",
// "tcp:reset_sent:NO_SOCKET", "tcp:reset_received".
func tcpEventType(f *flowpb.Flow) (string, bool) {
	x := contract.TCPEvent(f)
	if x == nil {
		return "", false
	}
	s := "tcp:" + clean(x[contract.ExtTCPEvent].GetStringValue())
	if r := x[contract.ExtTCPReason].GetStringValue(); r != "" {
		s += ":" + clean(strings.TrimPrefix(r, contract.TCPResetReasonPrefix))
	}
	return s, true
}
