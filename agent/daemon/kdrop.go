package daemon

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/loupe-project/loupe/agent"
	"github.com/loupe-project/loupe/contract"
	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/observer"
	"golang.org/x/sys/unix"
)

// DefaultKernelDropDeny are the kernel drop reasons not reported unless
// --kernel-drop-deny says otherwise:
//   - NOT_SPECIFIED, QUEUE_PURGE: an idle machine frees packets with them
//     all the time (plain kfree_skb calls, queues purged);
//   - TC_INGRESS, TC_EGRESS: a tc or TCX program dropped the packet; on a
//     pod's veth that is loupe's own datapath, whose drop event already
//     reported it with its reason (a policy denial reported twice, the
//     second time as DROP_REASON_UNKNOWN, broke Hubble's "missing replies"
//     arithmetic);
//   - SOCKET_FILTER: a raw socket's filter declined its copy of a packet
//     that was delivered (ping and tcpdump refuse each other's replies).
//
// A kernel without some of these names skips them.
var DefaultKernelDropDeny = []string{"NOT_SPECIFIED", "QUEUE_PURGE", "TC_INGRESS", "TC_EGRESS", "SOCKET_FILTER"}

// endpointNetnsRefresh is the least time between two rebuilds of the
// namespace-to-endpoint table, which a namespace not in it triggers (every
// agent sees every namespace's drops).
const endpointNetnsRefresh = 200 * time.Millisecond

// kernelEvents is the agent's observer.KernelEvents: it applies
// contract.ReportsNetns with the node's namespace and its endpoints', and
// names reasons and functions from the running kernel.
type kernelEvents struct {
	nodeIno    uint64
	reasons    map[uint32]string
	rstReasons map[uint32]string // enum sk_rst_reason (tcp.go)
	syms       *datapath.Kallsyms
	endpoints  func() []agent.Endpoint
	ipcache    func(netip.Addr) (uint32, bool)
	// inNetNS runs a function in the node's namespace (nil: not possible).
	inNetNS func(func() error) error

	mu    sync.Mutex
	byIno map[uint64]*observer.NetnsEndpoint
	built time.Time
}

var _ observer.KernelEvents = (*kernelEvents)(nil)

func (k *kernelEvents) Netns(inum uint64) (bool, *observer.NetnsEndpoint) {
	var ep *observer.NetnsEndpoint
	report := contract.ReportsNetns(inum, k.nodeIno, func(i uint64) bool {
		ep = k.endpoint(i)
		return ep != nil
	})
	return report, ep
}

func (k *kernelEvents) endpoint(inum uint64) *observer.NetnsEndpoint {
	k.mu.Lock()
	defer k.mu.Unlock()
	if ep, ok := k.byIno[inum]; ok || time.Since(k.built) < endpointNetnsRefresh {
		return ep
	}
	k.byIno = map[uint64]*observer.NetnsEndpoint{}
	for _, e := range k.endpoints() {
		ino, err := netnsInode(e.Netns)
		if e.Netns == "" && k.inNetNS != nil {
			// Recovered without its path (agent/recover.go).
			err = k.inNetNS(func() error {
				var err error
				ino, err = netnsOfHostVeth(e.HostIfname)
				return err
			})
		}
		if err != nil {
			continue // the pod is going away
		}
		k.byIno[ino] = &observer.NetnsEndpoint{ID: e.ID, Identity: e.Identity, IPv4: e.IPv4, IPv6: e.IPv6}
	}
	k.built = time.Now()
	return k.byIno[inum]
}

func (k *kernelEvents) DropReason(code uint32) string {
	if s, ok := k.reasons[code]; ok {
		return s
	}
	return fmt.Sprintf("%s%d", datapath.DropReasonPrefix, code)
}

func (k *kernelEvents) Function(addr uint64) string { return k.syms.Function(addr) }

func (k *kernelEvents) Identity(a netip.Addr) uint32 {
	id, _ := k.ipcache(a)
	return id
}

func netnsInode(path string) (uint64, error) {
	if path == "" {
		return 0, fmt.Errorf("no netns path")
	}
	// Runtimes name /var/run/netns, a link to /run on the host; in the
	// agent's container only /run/netns is mounted.
	if rest, ok := strings.CutPrefix(path, "/var/run/netns/"); ok {
		if _, err := os.Stat(path); err != nil {
			path = filepath.Join(netnsDir, rest)
		}
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, err
	}
	// The empty file a namespace is bind-mounted on has an inode too:
	// without the mount (no mount propagation into the container) it
	// would name no namespace, silently.
	if fs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("%s is not a network namespace (is the host's %s mounted with HostToContainer propagation?)", path, netnsDir)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// startKernelDrops attaches the kfree_skb tracepoint and returns what the
// observer needs to report its records. A kernel without BTF or tracepoint
// support costs the feature, not the agent: it is logged and nil returned.
func startKernelDrops(cfg *Config, dp *datapath.Datapath, ag *agent.Agent, log *slog.Logger) (*kernelEvents, *datapath.KernelDrops, error) {
	if cfg.NoKernelDrops {
		return nil, nil, nil
	}
	reasons, err := datapath.KernelEnum(datapath.EnumSkbDropReason)
	if err != nil {
		log.Warn("kernel drops off: the kernel's drop reasons are unknown", "err", err)
		return nil, nil, nil
	}
	denyNames := cfg.KernelDropDeny
	if denyNames == nil {
		denyNames = DefaultKernelDropDeny
	}
	if len(denyNames) == 1 && strings.EqualFold(denyNames[0], "none") {
		denyNames = nil
	}
	if slices.Equal(denyNames, DefaultKernelDropDeny) {
		denyNames = datapath.KnownReasons(reasons, datapath.DropReasonPrefix, denyNames)
	}
	deny, err := datapath.ReasonValues(reasons, datapath.DropReasonPrefix, denyNames)
	if err != nil {
		return nil, nil, fmt.Errorf("--kernel-drop-deny: %w", err)
	}
	var nodeIno uint64
	if err := cfg.inNetNS(func() error {
		var err error
		nodeIno, err = netnsInode("/proc/thread-self/ns/net")
		return err
	}); err != nil {
		return nil, nil, fmt.Errorf("node netns: %w", err)
	}
	kd, err := datapath.LoadKernelDrops(datapath.KernelDropConfig{BPFRoot: cfg.BPFRoot, EventsPerSecond: cfg.KernelDropEventsPerSecond, Deny: deny})
	if err != nil {
		log.Warn("kernel drops off", "err", err)
		return nil, nil, nil
	}
	log.Info("kernel drops reported", "deny", denyNames, "node_netns", nodeIno)
	return &kernelEvents{nodeIno: nodeIno, reasons: reasons, syms: datapath.NewKallsyms(""), endpoints: ag.Endpoints, ipcache: dp.LookupIPCache,
		inNetNS: cfg.inNetNS}, kd, nil
}

// newKernelDropCollector exports the tracepoint's own loss counts.
func newKernelDropCollector(stats func() (datapath.EventStats, error)) *counterCollector {
	return newCounterCollector("loupe_kernel_drop_events_total",
		"Kernel drops the kfree_skb tracepoint did not hand over: rate_limited (its per-CPU limit; sent as LostEvents), no_netns (neither device nor socket: no node's to report)",
		"outcome", func() ([]labeledCount, error) {
			s, err := stats()
			return []labeledCount{{"rate_limited", s.KernelDropsLimited}, {"no_netns", s.KernelDropsNoNetns}}, err
		})
}

// withKernelDropLosses counts the kernel-drop events the tracepoint's rate
// limit held back with the datapath's rate-limited drop events, so that
// they reach the flow stream as LostEvents the same way.
func withKernelDropLosses(stats func() (datapath.EventStats, error)) func() (datapath.EventStats, error) {
	return func() (datapath.EventStats, error) {
		s, err := stats()
		s.DropEventsLimited += s.KernelDropsLimited
		return s, err
	}
}
