// Package datapath loads, pins and attaches loupe's BPF programs and gives
// the agent typed access to their maps.
//
// Pins live under a bpfRoot directory (a bpffs, mounted by Load if needed):
//
//	<bpfRoot>/progs/{xdp,tcx_ingress,tcx_egress}
//	<bpfRoot>/maps/<map name>
//	<bpfRoot>/links/<host ifname>/{xdp,tcx_ingress,tcx_egress}
//	<bpfRoot>/progs/kfree_skb, <bpfRoot>/tracing/kfree_skb (LoadKernelDrops)
package datapath

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Pin names under <bpfRoot>/progs and <bpfRoot>/links/<ifname>.
const (
	PinXDP        = "xdp"
	PinTCXIngress = "tcx_ingress"
	PinTCXEgress  = "tcx_egress"

	progsDir = "progs"
	mapsDir  = "maps"
	linksDir = "links"
)

// Map names, as pinned under <bpfRoot>/maps.
const (
	MapEndpoints    = "endpoints"
	MapIPCache      = "ipcache"
	MapPolicy       = "policy"
	MapConntrack    = "conntrack"
	MapCounters     = "counters"
	MapEvents       = "events"
	MapEventStats   = "event_stats"
	MapDropEvBucket = "drop_ev_bucket"
	MapL7Events     = "l7_events"
	MapL7Stats      = "l7_stats"
	MapL7EvBucket   = "l7_ev_bucket"
	MapLocalEps     = "local_eps"
)

// Defaults for Config fields left zero.
const (
	DefaultDropEventsPerSecond = 1000
	DefaultReportInterval      = 5 * time.Second
	// DefaultEventsRingBytes is the events ring buffer's size: 16 MiB
	// holds about 58k events, 0.29 s of 200k events/s, so an agent that
	// is not scheduled for a moment on a busy node loses none (4 MiB lost
	// about 1 % of them on the events benchmark; docs/performance.md).
	DefaultEventsRingBytes = 16 << 20
)

// Config configures Load.
type Config struct {
	// BPFRoot is the directory for pins; bpffs is mounted there if it is not one.
	BPFRoot string
	// DropEventsPerSecond limits drop events for the node (split evenly across
	// CPUs, at least 1 per CPU). Drop counters are always exact. 0 = default.
	DropEventsPerSecond uint32
	// ReportInterval is how often an active connection gets a periodic event.
	// 0 = DefaultReportInterval.
	ReportInterval time.Duration
	// NoConnStats turns off per-connection bytes and TCP handshake timing
	// (bpf/events.h conn_stats): conntrack then counts only the replies'
	// packets it needs. The agent's --connection-stats=false sets it.
	NoConnStats bool
	// NoLocalRedirect routes packets between two pods of this node through
	// the host's stack (and the to-pod program) instead of delivering them
	// from the from-pod program straight into the destination pod. The
	// agent's --local-redirect=false sets it.
	NoLocalRedirect bool
	// EventsRingBytes is the size of the ring buffer every event goes
	// through to the agent: a power of two and a multiple of the page
	// size. 0 = DefaultEventsRingBytes. A pinned ring of another size is
	// replaced (events in it are lost).
	EventsRingBytes uint32
	// L7 is the set of L7DNS | L7HTTP the programs capture (--l7); 0 is off.
	L7 uint8
	// DNSPorts are the UDP and TCP ports whose payloads are DNS, at most
	// L7MaxDNSPorts; nil means DefaultDNSPorts.
	DNSPorts []uint16
	// HTTPCaptureLen is how many bytes of an HTTP message are copied, at
	// most L7DataLen; 0 = DefaultHTTPCaptureLen.
	HTTPCaptureLen uint32
	// L7EventsPerSecond limits L7 records for the node, split across CPUs
	// as DropEventsPerSecond; 0 = DefaultL7EventsPerSecond.
	L7EventsPerSecond uint32
}

// Datapath is the loaded set of programs and maps of one agent.
type Datapath struct {
	root string
	objs loupeObjects

	eventsRead  atomic.Uint64
	eventsShort atomic.Uint64
	l7Read      atomic.Uint64
	l7CaughtUp  atomic.Int64
	caughtUp    atomic.Int64 // see EventsCaughtUp
}

type programPin struct {
	name string
	prog func(*loupeObjects) *ebpf.Program
}

var programPins = []programPin{
	{PinXDP, func(o *loupeObjects) *ebpf.Program { return o.LoupeXdp }},
	{PinTCXIngress, func(o *loupeObjects) *ebpf.Program { return o.LoupeFromPod }},
	{PinTCXEgress, func(o *loupeObjects) *ebpf.Program { return o.LoupeToPod }},
}

// Load loads the datapath and pins it under cfg.BPFRoot. On a restart it
// reuses the pinned maps (state survives), re-pins the programs, and moves
// every pinned link to the new programs with link.Update, so an attachment
// is neither duplicated nor dropped.
func Load(cfg Config) (*Datapath, error) { return load(cfg, nil) }

// load is Load with the spec adjusted first (tests load an earlier layout).
func load(cfg Config, adjust func(*ebpf.CollectionSpec)) (*Datapath, error) {
	if cfg.BPFRoot == "" {
		return nil, errors.New("load datapath: empty bpf root")
	}
	if err := ensureBPFFS(cfg.BPFRoot); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	for _, d := range []string{mapsDir, progsDir, linksDir} {
		if err := os.MkdirAll(filepath.Join(cfg.BPFRoot, d), 0o700); err != nil {
			return nil, fmt.Errorf("load datapath: %w", err)
		}
	}
	unlock, err := lockRoot(cfg.BPFRoot, true)
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	defer unlock()

	spec, err := datapathSpec(cfg)
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if adjust != nil {
		adjust(spec)
	}
	d := &Datapath{root: cfg.BPFRoot}
	if err := loadObjects(spec, filepath.Join(cfg.BPFRoot, mapsDir), &d.objs); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := d.pinPrograms(); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	if err := d.updateLinks(); err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	return d, nil
}

func datapathSpec(cfg Config) (*ebpf.CollectionSpec, error) {
	spec, err := loadLoupe()
	if err != nil {
		return nil, err
	}
	rate := uint64(cfg.DropEventsPerSecond)
	if rate == 0 {
		rate = DefaultDropEventsPerSecond
	}
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		return nil, fmt.Errorf("possible cpus: %w", err)
	}
	perCPU := max(1, (rate+uint64(ncpu)-1)/uint64(ncpu))
	interval := cfg.ReportInterval
	if interval <= 0 {
		interval = DefaultReportInterval
	}
	vars := map[string]any{
		loupeVarDropEvRate:       perCPU,
		loupeVarDropEvBurst:      perCPU,
		loupeVarReportIntervalNs: uint64(interval.Nanoseconds()),
		loupeVarConnStats:        uint64(1),
	}
	if cfg.NoConnStats {
		vars[loupeVarConnStats] = uint64(0)
	}
	vars[loupeVarLocalRedirect] = uint8(1)
	if cfg.NoLocalRedirect {
		vars[loupeVarLocalRedirect] = uint8(0)
	}
	l7, err := l7Variables(cfg, uint64(ncpu))
	if err != nil {
		return nil, err
	}
	maps.Copy(vars, l7)
	if spec.Maps[MapEvents].MaxEntries, err = eventsRingBytes(cfg.EventsRingBytes); err != nil {
		return nil, err
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("variable %s missing from object", name)
		}
		if err := vs.Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	return spec, nil
}

// eventsRingBytes checks a ring size (0 = DefaultEventsRingBytes) as the
// kernel will, so a bad one is a clear error rather than EINVAL.
func eventsRingBytes(n uint32) (uint32, error) {
	if n == 0 {
		return DefaultEventsRingBytes, nil
	}
	page := uint32(os.Getpagesize())
	if n < page || n&(n-1) != 0 {
		return 0, fmt.Errorf("events ring size %d: want a power of two of at least the page size, %d", n, page)
	}
	return n, nil
}

// matchPinnedRing sizes spec's events ring as the one the datapath pinned
// under root, so a program that writes into it (kernel drops, TCP events)
// shares it instead of replacing it.
func matchPinnedRing(spec *ebpf.CollectionSpec, root string) error {
	ms, ok := spec.Maps[MapEvents]
	if !ok {
		return nil
	}
	m, err := ebpf.LoadPinnedMap(filepath.Join(root, mapsDir, MapEvents), &ebpf.LoadPinOptions{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pinned events ring: %w", err)
	}
	defer m.Close()
	ms.MaxEntries = m.MaxEntries()
	return nil
}

// l7Variables are the values of bpf/l7.h's settings, typed as the C has them.
func l7Variables(cfg Config, ncpu uint64) (map[string]any, error) {
	ports := cfg.DNSPorts
	if ports == nil {
		ports = DefaultDNSPorts
	}
	if len(ports) > L7MaxDNSPorts {
		return nil, fmt.Errorf("%d dns ports, at most %d", len(ports), L7MaxDNSPorts)
	}
	var arr [L7MaxDNSPorts]uint16
	for i, p := range ports {
		if p == 0 {
			return nil, errors.New("dns port 0")
		}
		arr[i] = p
	}
	httpLen := cfg.HTTPCaptureLen
	if httpLen == 0 {
		httpLen = DefaultHTTPCaptureLen
	}
	if httpLen > L7DataLen {
		return nil, fmt.Errorf("http capture length %d exceeds %d", httpLen, L7DataLen)
	}
	rate := uint64(cfg.L7EventsPerSecond)
	if rate == 0 {
		rate = DefaultL7EventsPerSecond
	}
	perCPU := max(1, (rate+ncpu-1)/ncpu)
	return map[string]any{
		loupeVarL7Mode:     cfg.L7,
		loupeVarL7DnsPorts: arr,
		loupeVarL7HttpLen:  httpLen,
		loupeVarL7EvRate:   perCPU,
		loupeVarL7EvBurst:  perCPU,
	}, nil
}

// loadObjects loads spec with its maps pinned by name in pinDir. A pinned map
// whose layout no longer matches (an upgrade changed it) is replaced, with a
// warning: its old state cannot be read by the new programs anyway, unless
// a migration (migrations) carries its entries into the new map.
func loadObjects(spec *ebpf.CollectionSpec, pinDir string, objs *loupeObjects) error {
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	olds := map[string]*ebpf.Map{} // replaced maps a migration reads
	defer func() {
		for _, m := range olds {
			m.Close()
		}
	}()
	for attempt := 0; ; attempt++ {
		err := spec.LoadAndAssign(objs, opts)
		if err == nil {
			for name, m := range olds {
				n, err := migrations[name](m, objs)
				if err != nil {
					// The engine rewrites the map anyway; until then, what
					// was not migrated is missing.
					slog.Warn("migrating replaced pinned map", "map", name, "migrated", n, "err", err)
					continue
				}
				slog.Info("migrated replaced pinned map", "map", name, "entries", n)
			}
			return nil
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("verifier: %+v", ve)
		}
		if !errors.Is(err, ebpf.ErrMapIncompatible) || attempt > 0 {
			return err
		}
		for name, ms := range spec.Maps {
			if ms.Pinning != ebpf.PinByName {
				continue
			}
			path := filepath.Join(pinDir, name)
			m, perr := ebpf.LoadPinnedMap(path, nil)
			if perr != nil {
				continue
			}
			if cerr := ms.Compatible(m); cerr != nil {
				slog.Warn("replacing incompatible pinned map", "map", name, "reason", cerr)
				if uerr := m.Unpin(); uerr != nil {
					m.Close()
					return fmt.Errorf("unpin %s: %w", name, uerr)
				}
				if migrations[name] != nil {
					olds[name] = m
					continue
				}
			}
			m.Close()
		}
	}
}

// migrations carry a replaced map's entries into its new layout. Without
// the policy map's, every pod with policy would refuse new connections
// from the upgrade until the policy engine's first write.
var migrations = map[string]func(old *ebpf.Map, objs *loupeObjects) (int, error){
	MapPolicy: migratePolicy,
}

// migratePolicy carries the policy map of any earlier layout over.
func migratePolicy(old *ebpf.Map, objs *loupeObjects) (int, error) {
	if old.Type() == ebpf.LPMTrie {
		return migrateLPMPolicy(old, objs)
	}
	return migrateHashPolicy(old, objs)
}

// migrateLPMPolicy copies the entries of an LPM policy map with today's key
// and value but another capacity (262,144 before the map grew) as they
// are. Another layout is left alone.
func migrateLPMPolicy(old *ebpf.Map, objs *loupeObjects) (int, error) {
	var (
		k loupePolicyKey
		v loupePolicyValue
		n int
	)
	if old.KeySize() != uint32(binary.Size(k)) || old.ValueSize() != uint32(binary.Size(v)) {
		return 0, nil
	}
	it := old.Iterate()
	for it.Next(&k, &v) {
		if err := objs.Policy.Put(&k, &v); err != nil {
			return n, fmt.Errorf("migrate policy entry %+v: %w", policyKeyFrom(k), err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read old policy map: %w", err)
	}
	return n, nil
}

// migrateHashPolicy copies the entries of the policy map of before port
// blocks (a hash of {u32 ep_id, peer_identity; u16 dport; u8 proto,
// direction} → {u32 rule_id; u8 verdict}) into the LPM trie: each is a
// one-port (or any-port) key of the new map. Another layout is left alone.
func migrateHashPolicy(old *ebpf.Map, objs *loupeObjects) (int, error) {
	if old.Type() != ebpf.Hash || old.KeySize() != 12 || old.ValueSize() != 8 {
		return 0, nil
	}
	var (
		k [12]byte
		v [8]byte
		n int
	)
	ne := binary.NativeEndian
	it := old.Iterate()
	for it.Next(&k, &v) {
		key := PolicyKey{EndpointID: ne.Uint32(k[0:]), PeerIdentity: ne.Uint32(k[4:]), Port: ne.Uint16(k[8:]), Proto: k[10], Direction: k[11]}
		if key.Validate() != nil {
			continue // a port without a protocol: no compiler wrote one
		}
		if err := putPolicy(objs.Policy, key, PolicyEntry{RuleID: ne.Uint32(v[0:]), Deny: v[4] != policyAllow}); err != nil {
			return n, fmt.Errorf("migrate policy entry %+v: %w", key, err)
		}
		n++
	}
	if err := it.Err(); err != nil {
		return n, fmt.Errorf("read old policy map: %w", err)
	}
	return n, nil
}

// pinPrograms pins each program under a temporary name and renames it over
// the old pin, so a reader never finds the path missing.
func (d *Datapath) pinPrograms() error {
	for _, pp := range programPins {
		final := filepath.Join(d.root, progsDir, pp.name)
		tmp := filepath.Join(d.root, progsDir, "tmp_"+pp.name) // bpffs refuses dots in names
		_ = os.Remove(tmp)
		if err := pp.prog(&d.objs).Pin(tmp); err != nil {
			return fmt.Errorf("pin program %s: %w", pp.name, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("pin program %s: %w", pp.name, err)
		}
	}
	return nil
}

// updateLinks moves every pinned link to the freshly loaded programs. Links
// whose interface is gone are unpinned.
func (d *Datapath) updateLinks() error {
	ifaces, err := os.ReadDir(filepath.Join(d.root, linksDir))
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	for _, ifc := range ifaces {
		if !ifc.IsDir() {
			continue
		}
		dir := filepath.Join(d.root, linksDir, ifc.Name())
		for _, pp := range programPins {
			path := filepath.Join(dir, pp.name)
			l, err := link.LoadPinnedLink(path, nil)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				slog.Warn("removing unreadable link pin", "path", path, "err", err)
				_ = os.Remove(path)
				continue
			}
			if !linkAlive(l) {
				slog.Info("removing link of a vanished interface", "path", path)
				_ = l.Unpin()
				l.Close()
				continue
			}
			err = l.Update(pp.prog(&d.objs))
			l.Close()
			if err != nil {
				return fmt.Errorf("update link %s: %w", path, err)
			}
		}
		removeIfEmpty(dir)
	}
	return nil
}

// Close releases the programs and maps of this process; pins (and so every
// attachment) stay.
func (d *Datapath) Close() error {
	if err := d.objs.Close(); err != nil {
		return fmt.Errorf("close datapath: %w", err)
	}
	return nil
}

// BPFRoot is the directory the datapath is pinned under.
func (d *Datapath) BPFRoot() string { return d.root }
