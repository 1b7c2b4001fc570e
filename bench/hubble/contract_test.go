package hubble

import (
	"testing"

	"github.com/cilium/cilium/pkg/identity"
	monitorAPI "github.com/cilium/cilium/pkg/monitor/api"

	"github.com/loupe-project/loupe/contract"
)

// TestContractMatchesCilium holds loupe's contract package to Cilium's own
// definitions, at the version loupe's go.mod pins: a number or name that
// drifts from Cilium's fails here, whatever loupe's own tests assume.
func TestContractMatchesCilium(t *testing.T) {
	types := map[string][2]int{
		"drop":           {contract.MessageTypeDrop, monitorAPI.MessageTypeDrop},
		"debug":          {contract.MessageTypeDebug, monitorAPI.MessageTypeDebug},
		"capture":        {contract.MessageTypeCapture, monitorAPI.MessageTypeCapture},
		"trace":          {contract.MessageTypeTrace, monitorAPI.MessageTypeTrace},
		"policy-verdict": {contract.MessageTypePolicyVerdict, monitorAPI.MessageTypePolicyVerdict},
		"trace-sock":     {contract.MessageTypeTraceSock, monitorAPI.MessageTypeTraceSock},
		"access-log":     {contract.MessageTypeAccessLog, monitorAPI.MessageTypeAccessLog},
		"agent":          {contract.MessageTypeAgent, monitorAPI.MessageTypeAgent},
	}
	for name, v := range types {
		if v[0] != v[1] {
			t.Errorf("message type %s: loupe %d, Cilium %d", name, v[0], v[1])
		}
	}
	if len(contract.MessageTypeNames) != len(monitorAPI.MessageTypeNames) {
		t.Errorf("%d type names, Cilium has %d", len(contract.MessageTypeNames), len(monitorAPI.MessageTypeNames))
	}
	for name, n := range monitorAPI.MessageTypeNames {
		if got, ok := contract.MessageTypeNames[name]; !ok || int(got) != n {
			t.Errorf("type name %q: loupe %d (%v), Cilium %d", name, got, ok, n)
		}
	}

	for p := range 256 {
		if got, want := contract.TraceObservationPointName(uint8(p)), monitorAPI.TraceObservationPoint(uint8(p)); got != want {
			t.Errorf("observation point %d: loupe %q, Cilium %q", p, got, want)
		}
		if got, want := contract.DropReasonText(uint8(p)), monitorAPI.DropReason(uint8(p)); got != want {
			t.Errorf("drop reason %d: loupe %q, Cilium %q", p, got, want)
		}
	}
	for _, p := range []struct {
		got  uint8
		want uint8
	}{{contract.TraceToLxc, monitorAPI.TraceToLxc}, {contract.TraceFromLxc, monitorAPI.TraceFromLxc}} {
		if p.got != p.want {
			t.Errorf("observation point %d, Cilium %d", p.got, p.want)
		}
	}
	for m := range uint32(10) {
		want := monitorAPI.PolicyMatchType(m).String()
		if got := contract.PolicyMatchName(m); got != want {
			t.Errorf("policy match %d: loupe %q, Cilium %q", m, got, want)
		}
	}
	if len(contract.AgentNotificationNames) != int(monitorAPI.AgentNotifyIPCacheDeleted)+1 {
		t.Errorf("%d agent notification names, Cilium has %d types", len(contract.AgentNotificationNames), monitorAPI.AgentNotifyIPCacheDeleted+1)
	}

	ids := []struct {
		loupe  uint32
		cilium identity.NumericIdentity
	}{
		{contract.IdentityHost, identity.ReservedIdentityHost},
		{contract.IdentityWorld, identity.ReservedIdentityWorld},
		{contract.IdentityUnmanaged, identity.ReservedIdentityUnmanaged},
		{contract.IdentityHealth, identity.ReservedIdentityHealth},
		{contract.IdentityInit, identity.ReservedIdentityInit},
		{contract.IdentityRemoteNode, identity.ReservedIdentityRemoteNode},
		{contract.IdentityKubeAPIServer, identity.ReservedIdentityKubeAPIServer},
		{contract.IdentityIngress, identity.ReservedIdentityIngress},
		{contract.IdentityWorldIPv4, identity.ReservedIdentityWorldIPv4},
		{contract.IdentityWorldIPv6, identity.ReservedIdentityWorldIPv6},
	}
	for _, id := range ids {
		if id.loupe != uint32(id.cilium) {
			t.Errorf("reserved identity %s: loupe %d, Cilium %d", id.cilium, id.loupe, id.cilium)
		}
		if got, want := contract.ReservedName(id.loupe), id.cilium.String(); got != want {
			t.Errorf("reserved identity %d: loupe %q, Cilium %q", id.loupe, got, want)
		}
	}
}
