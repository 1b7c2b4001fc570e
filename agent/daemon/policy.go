package daemon

import (
	"log/slog"
	"net/netip"
	"time"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/policy"
)

// newPolicyEngine wires the NetworkPolicy engine to the agent: the engine
// assigns identities (also to pods registering later) and enforcement
// flags through the agent's endpoint table, and owns the policy map and
// the ipcache entries outside the node's pod CIDRs.
func newPolicyEngine(node string, dp *datapath.Datapath, ag *agent.Agent, log *slog.Logger) *policy.Engine {
	eng := policy.NewEngine(policy.EngineConfig{Node: node, Datapath: dp, Endpoints: policyEndpoints{ag}, Log: log, PolicyCapacity: dp.PolicyCapacity(),
		FlushAgain: []time.Duration{20 * time.Millisecond, 100 * time.Millisecond, 500 * time.Millisecond, 2 * time.Second}})
	ag.SetIdentityFunc(eng.PodIdentity)
	return eng
}

// policyEndpoints adapts the agent to policy.Endpoints.
type policyEndpoints struct{ a *agent.Agent }

func (p policyEndpoints) PolicyEndpoints() []policy.EndpointState {
	eps := p.a.Endpoints()
	out := make([]policy.EndpointState, 0, len(eps))
	for _, e := range eps {
		out = append(out, policy.EndpointState{
			ID: e.ID, Ifindex: e.HostIfindex, Namespace: e.PodNamespace, Name: e.PodName, Identity: e.Identity,
			Flags: policy.Flags{Ingress: e.PolicyIngress, Egress: e.PolicyEgress},
		})
	}
	return out
}

func (p policyEndpoints) SetEndpointPolicy(want map[uint32]policy.EndpointPolicy) error {
	m := make(map[uint32]agent.EndpointPolicy, len(want))
	for id, w := range want {
		m[id] = agent.EndpointPolicy{Identity: w.Identity, Ingress: w.Flags.Ingress, Egress: w.Flags.Egress}
	}
	return p.a.SetEndpointPolicy(m)
}

func (p policyEndpoints) OwnsPrefix(pfx netip.Prefix) bool { return p.a.OwnsPrefix(pfx) }
