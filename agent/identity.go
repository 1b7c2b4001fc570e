package agent

import "hash/fnv"

// Identities below MinIdentity are reserved, as in Cilium (host, world,
// ...); pod identities use the 24-bit cluster-local range above them.
const (
	MinIdentity = 256
	maxIdentity = 1<<24 - 1
)

// PodIdentity is the numeric security identity of a pod. Until the agent
// derives identities from pod labels (pods with equal namespace and labels
// sharing one), it is a deterministic function of the two labels every pod
// has, k8s:io.kubernetes.pod.namespace and the pod name: FNV-1a over both,
// folded into [MinIdentity, 2^24). Every agent computes the same number for
// the same pod, so no allocation or coordination is needed; distinct pods
// collide with probability ~n²/2^25.
func PodIdentity(namespace, name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte("k8s:io.kubernetes.pod.namespace=" + namespace))
	h.Write([]byte{0})
	h.Write([]byte("k8s:io.kubernetes.pod.name=" + name))
	return MinIdentity + h.Sum32()%(maxIdentity-MinIdentity+1)
}
