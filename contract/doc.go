// Package contract holds every number and rule loupe shares with Cilium and
// Hubble, and with its own C datapath: monitor message types, trace
// observation points, drop reasons and their texts, policy match types,
// verdicts and directions as the datapath writes them, reserved identities
// and their labels, the Observer and relay ports, the TLS server name of an
// agent, the Observer address of a node, and which agent reports an event
// that the kernel raises for every network namespace.
//
// It is a leaf: it imports Hubble's generated API types and Kubernetes' core
// types, and nothing of loupe. datapath, observer, policy, agent, relay, cli
// and ui import it and declare none of these numbers again.
//
// Three tests keep it honest:
//   - datapath's TestHeaderMatchesContract reads datapath/bpf/*.h and the
//     compiled object's BTF, and fails when a #define or an offset of the
//     event record differs from these constants;
//   - bench/hubble's TestContractMatchesCilium compares them with Cilium's
//     own pkg/monitor/api and pkg/identity, at the version loupe's go.mod
//     pins;
//   - test/e2e's TestPrivilegedRecordToHubbleText runs records from the
//     real datapath through the observer and both CLIs' printers.
//
// Cilium's names for the same things live in pkg/monitor/api.
package contract
