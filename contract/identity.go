package contract

// Reserved identities, in Cilium's numbering. The datapath uses 0 as the
// wildcard peer in policy keys and 2 for an address missing from the
// ipcache; loupe gives 1 to its node's own addresses, 5 to a pod whose
// labels are not known yet and 6 to other nodes' addresses.
const (
	IdentityUnknown       uint32 = 0 // in policy keys: any peer
	IdentityHost          uint32 = 1
	IdentityWorld         uint32 = 2
	IdentityUnmanaged     uint32 = 3
	IdentityHealth        uint32 = 4
	IdentityInit          uint32 = 5
	IdentityRemoteNode    uint32 = 6
	IdentityKubeAPIServer uint32 = 7
	IdentityIngress       uint32 = 8
	IdentityWorldIPv4     uint32 = 9
	IdentityWorldIPv6     uint32 = 10
)

// Identity ranges (policy/README.md): pod identities are cluster-wide;
// CIDR identities carry bit 24, like Cilium's local identities.
const (
	MinPodIdentity  uint32 = 256
	MaxPodIdentity  uint32 = 1<<24 - 1
	CIDRIdentityBit uint32 = 1 << 24
)

// reservedNames are Cilium's names of the reserved identities; an
// endpoint with one carries the single label "reserved:<name>".
var reservedNames = [...]string{
	IdentityHost:          "host",
	IdentityWorld:         "world",
	IdentityUnmanaged:     "unmanaged",
	IdentityHealth:        "health",
	IdentityInit:          "init",
	IdentityRemoteNode:    "remote-node",
	IdentityKubeAPIServer: "kube-apiserver",
	IdentityIngress:       "ingress",
	IdentityWorldIPv4:     "world-ipv4",
	IdentityWorldIPv6:     "world-ipv6",
}

// ReservedLabelPrefix starts the label of a reserved identity.
const ReservedLabelPrefix = "reserved:"

var reservedLabels = func() [][]string {
	out := make([][]string, len(reservedNames))
	for id, name := range reservedNames {
		if name != "" {
			out[id] = []string{ReservedLabelPrefix + name}
		}
	}
	return out
}()

// ReservedName is Cilium's name of a reserved identity ("world"), or "".
func ReservedName(id uint32) string {
	if id < uint32(len(reservedNames)) {
		return reservedNames[id]
	}
	return ""
}

// ReservedLabels are the labels an endpoint with a reserved identity
// carries in a flow (["reserved:world"]), or nil. The slice is shared:
// callers must not modify it.
func ReservedLabels(id uint32) []string {
	if id < uint32(len(reservedLabels)) {
		return reservedLabels[id]
	}
	return nil
}

// IsWorld reports whether id stands for addresses outside the cluster.
func IsWorld(id uint32) bool {
	return id == IdentityWorld || id == IdentityWorldIPv4 || id == IdentityWorldIPv6
}
