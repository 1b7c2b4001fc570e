package agent

import "hash/fnv"

// Identities below MinIdentity are reserved, as in Cilium (host, world,
// ...); pod identities use the 24-bit cluster-local range above them.
const (
	MinIdentity = 256
	maxIdentity = 1<<24 - 1
)

// PodIdentity is the identity Register gives a pod when no identity
// function is installed (SetIdentityFunc): an Agent used on its own, as in
// this package's tests. loupe-agent installs the policy engine's, which
// derives identities from namespace and labels (pods with equal ones share
// one; contract.IdentityInit until the engine's snapshot has the pod), so
// there PodIdentity is never used. It is FNV-1a over
// "k8s:io.kubernetes.pod.namespace=<namespace>" and
// "k8s:io.kubernetes.pod.name=<name>", folded into [MinIdentity, 2^24):
// every agent computes the same number for the same pod, and distinct pods
// collide with probability ~n²/2^25.
func PodIdentity(namespace, name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("k8s:io.kubernetes.pod.namespace=" + namespace))
	h.Write([]byte{0})
	h.Write([]byte("k8s:io.kubernetes.pod.name=" + name))
	return MinIdentity + h.Sum32()%(maxIdentity-MinIdentity+1)
}
