// Package cni is loupe's CNI plugin: it plumbs a pod into its node (veth
// pair, addresses, routes), registers the endpoint with the node's
// loupe-agent and attaches the agent's pinned datapath to the host veth.
//
// # Netconf
//
//	{"type":"loupe-cni","agentSocket":"/run/loupe/agent.sock","mtu":1500,"xdp":"native",
//	 "logFile":"/var/log/loupe-cni.log","logLevel":"info"}
//
// agentSocket defaults to /run/loupe/agent.sock, mtu to 1500 (576..65535),
// xdp to the agent's default (native, generic or off), logs to stderr
// (LOUPE_CNI_LOG overrides logFile). cniVersion 0.4.0, 1.0.0 and 1.1.0.
// A field with a bad value is CNI error 7 naming the field; JSON that does
// not parse is 6; an unsupported cniVersion is 1.
//
// # Addressing and routing
//
// The pod end gets the agent's IPv4 as /32 (and IPv6 as /128, without DAD
// and with accept_ra off). Its default route is "0.0.0.0/0 via <gateway>
// onlink", the gateway being the node address the agent holds on its
// loupe_host link (the first address of the pod CIDR): with arp_ignore=0
// the host veth answers ARP for it. IPv6 cannot work that way, since the
// kernel answers a neighbour solicitation only for addresses of the
// receiving interface, so every host veth carries fe80::1/64 (no DAD) and
// pods route "::/0 via fe80::1" (GatewayIPv6, the IPv6 gateway in the
// result). The node gets "<pod>/32 dev lxc..." (and /128).
//
// The host veth is "lxc" + 11 hex digits of sha256(containerID/ifname), so
// DEL and GC find it without the pod netns or prevResult.
//
// # Commands
//
// Each command is in its own file, cmd_add.go to cmd_gc.go; plugin.go
// holds the Plugin type and the start-up they share (netconf, CNI_ARGS and
// log, then the agent connection, its time budget and Status).
//
// ADD: Allocate, veth, addresses and routes, Register (with which the
// agent writes the endpoint entry, then attaches the programs), result; any
// failure undoes what was done, in reverse. The entry comes before the
// programs so anti-spoofing covers the first packet. The agent attaches
// because it holds the programs already: the plugin imports no eBPF code
// and starts as fast as a plain netlink plugin. ADD waits up to
// agentWaitSeconds (default 30) for an agent that is not up or not ready
// yet, as Cilium's plugin does, so pods scheduled while the DaemonSet
// starts do not fall into the runtime's backoff; after that, error 11
// naming the socket.
//
// DEL: delete the host veth (which removes the pod end and takes the
// programs off the wire), then Release, with which the agent removes the
// link pins, the endpoint and the addresses; whatever is missing is
// success. With the agent unreachable, DEL
// deletes the veth pair (taking the programs off the wire) and succeeds:
// the agent releases endpoints whose veth is gone (address, link pins) when
// it starts and every 30 s, so a pod's deletion never waits for the agent.
//
// CHECK: the pod and host ends, addresses, routes and MAC/MTU against
// prevResult, the agent's endpoint record, and the agent's CheckAttached. When
// the netconf sets no xdp mode, the agent's default is read by Allocate of
// the attachment after List has shown it exists (Allocate of a held pair
// returns it unchanged); StatusResponse does not carry the mode.
//
// STATUS: 50 while the agent is unreachable or not ready.
//
// GC: every agent endpoint and bare allocation not in
// cni.dev/valid-attachments is unlinked and released (the agent removes its
// link pins); lxc veths and link pins that no valid attachment owns are
// removed too. This assumes one loupe network per node (the agent's
// records are per node) and, as the spec asks, no ADD running meanwhile.
package cni
