package contract

// ReportsNetns is the one rule for which agent reports an event that the
// kernel raises for every network namespace (a tracepoint: a kernel drop,
// a retransmission, an exec). Several agents can share one kernel (the
// lab's nodes do), and each would see every such event; so an agent
// reports an event only when it happened in the network namespace of one
// of its own endpoints, or in its node's own namespace. Each event is then
// reported once in the cluster. An event in no endpoint's and no node's
// namespace (the machine's root namespace, in the lab) is reported by no
// agent.
//
// inum is the inode number of the event's network namespace (0 when the
// kernel gave none), node that of the agent's node, and isEndpoint tells
// whether a namespace is one of the agent's endpoints'.
func ReportsNetns(inum, node uint64, isEndpoint func(inum uint64) bool) bool {
	if inum == 0 {
		return false
	}
	return inum == node || isEndpoint(inum)
}
