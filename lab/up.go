package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// UpOptions configures Up.
type UpOptions struct {
	Dir   string
	Name  string // "" = the existing lab's, or DeriveName(Dir)
	Nodes int    // 0 = keep the existing count, or 2 for a new lab
	// Index is the subnet index; -1 picks one (0 for the default lab).
	Index   int
	XDPMode string
	// FlowBufferSize is every agent's flow ring size (0: the agent's default).
	FlowBufferSize int
	Files          []string
	// RulesDir is passed to every agent as --rules-dir.
	RulesDir string
}

// Up builds the lab, or completes and checks one that exists, then applies
// the manifest files. It is safe to run again.
func Up(ctx context.Context, opts UpOptions, stdin io.Reader, warn io.Writer) (*Lab, error) {
	// Read the manifests and find the binaries before touching anything.
	if err := checkFlowBufferSize(opts.FlowBufferSize); err != nil {
		return nil, err
	}
	objs, err := readManifestFiles(opts.Files, stdin)
	if err != nil {
		return nil, err
	}
	agentBin, err := sibling("loupe-agent")
	if err != nil {
		return nil, err
	}
	if _, err := sibling("loupe-cni"); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lab dir: %w", err)
	}
	unlock, err := lockFile(filepath.Join(opts.Dir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	l, err := Load(opts.Dir)
	fresh := errors.Is(err, os.ErrNotExist)
	if err != nil && !fresh {
		return nil, err
	}
	if fresh {
		name := opts.Name
		if name == "" {
			name = DeriveName(opts.Dir)
		}
		if err := ValidName(name); err != nil {
			return nil, err
		}
		l = &Lab{Dir: opts.Dir, Name: name, Index: opts.Index, XDPMode: opts.XDPMode, FlowBufferSize: opts.FlowBufferSize}
		if opts.RulesDir != "" {
			if l.RulesDir, err = filepath.Abs(opts.RulesDir); err != nil {
				return nil, fmt.Errorf("--rules-dir: %w", err)
			}
		}
	} else {
		if abs, _ := filepath.Abs(opts.RulesDir); opts.RulesDir != "" && abs != l.RulesDir {
			return nil, fmt.Errorf("the lab in %s runs with rules dir %q: run `loupe lab down` to change it", opts.Dir, l.RulesDir)
		}
		if opts.Name != "" && opts.Name != l.Name {
			return nil, fmt.Errorf("the lab in %s is named %q, not %q: run `loupe lab down` first", opts.Dir, l.Name, opts.Name)
		}
		if opts.XDPMode != "" && opts.XDPMode != l.XDPMode {
			return nil, fmt.Errorf("the lab in %s runs with xdp mode %q: run `loupe lab down` to change it", opts.Dir, l.XDPMode)
		}
		if opts.FlowBufferSize != 0 && opts.FlowBufferSize != l.FlowBufferSize {
			return nil, fmt.Errorf("the lab in %s runs with flow buffer size %d: run `loupe lab down` to change it", opts.Dir, l.FlowBufferSize)
		}
	}
	want := opts.Nodes
	switch {
	case want == 0 && len(l.Nodes) > 0:
		want = len(l.Nodes)
	case want == 0:
		want = 2
	case want < len(l.Nodes):
		return nil, fmt.Errorf("the lab has %d nodes; run `loupe lab down` to shrink it to %d", len(l.Nodes), want)
	}
	if want < 1 || want > maxNodes {
		return nil, fmt.Errorf("--nodes %d: want 1-%d", want, maxNodes)
	}
	for i := len(l.Nodes) + 1; i <= want; i++ {
		l.Nodes = append(l.Nodes, l.newNode(i))
	}
	// Unix socket paths hold at most 107 bytes; leave room for the agent's
	// Observer socket next to the endpoint one.
	if s := l.AgentSocket(l.Nodes[len(l.Nodes)-1].Name); len(s) > 96 {
		return nil, fmt.Errorf("lab dir %s is too long: agent socket %s exceeds the unix socket path limit", opts.Dir, s)
	}

	br, err := l.claimNetwork(fresh)
	if err != nil {
		return nil, err
	}
	if err := l.ensureBPFMount(); err != nil {
		return nil, err
	}
	for _, n := range l.Nodes {
		if err := l.ensureNode(br, n); err != nil {
			return nil, err
		}
	}
	if err := l.ensureHostRoutes(br); err != nil {
		return nil, err
	}
	if err := l.writeCNIConfig(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.ManifestsDir(), 0o755); err != nil {
		return nil, fmt.Errorf("manifests dir: %w", err)
	}
	for _, n := range l.Nodes {
		if err := l.writeNode(n); err != nil {
			return nil, err
		}
	}
	gen, err := l.bumpGeneration()
	if err != nil {
		return nil, err
	}
	exited := map[string]<-chan struct{}{}
	for _, n := range l.Nodes {
		if err := os.MkdirAll(l.NodeDir(n.Name), 0o755); err != nil {
			return nil, fmt.Errorf("node dir: %w", err)
		}
		done, err := l.startAgent(agentBin, n)
		if err != nil {
			return nil, err
		}
		exited[n.Name] = done
	}
	if err := l.waitAgents(ctx, gen, agentReadyTimeout, exited); err != nil {
		return nil, err
	}
	// The relay (and its web UI) merges every node's flows. Without the
	// binary the lab still works, node by node.
	if relayBin, err := sibling("loupe-relay"); err != nil {
		fmt.Fprintf(warn, "warning: no relay or web UI: %v\n", err)
	} else if err := l.startRelay(ctx, relayBin); err != nil {
		return nil, err
	}
	// Restart the servers of pods that lost them (a reboot of the lab's processes).
	recs, err := l.records()
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		if r.IP != "" && netnsMounted(r.netnsPath()) {
			if err := l.startServer(r); err != nil {
				return nil, err
			}
		}
	}
	if len(objs) > 0 {
		if err := l.Apply(ctx, objs, warn); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// claimNetwork records the lab in lab.json and creates its bridge. A new lab
// gets its subnet under a machine-wide lock, so parallel labs never share one.
func (l *Lab) claimNetwork(fresh bool) (netlink.Link, error) {
	if !fresh {
		if err := l.Save(); err != nil {
			return nil, err
		}
		return l.ensureBridge()
	}
	unlock, err := globalLock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, err := netlink.LinkByName(l.BridgeName()); err == nil {
		return nil, fmt.Errorf("link %s exists but %s holds no lab: another lab is named %q (use --name, or `loupe lab down --name %s`)", l.BridgeName(), l.Dir, l.Name, l.Name)
	}
	if l.Index < 0 {
		if l.Dir == DefaultDir && l.Name == DefaultName {
			l.Index = 0
		} else if l.Index, err = pickIndex(nil); err != nil {
			return nil, err
		}
	}
	if l.Index > maxIndex {
		return nil, fmt.Errorf("subnet index %d: want 0-%d", l.Index, maxIndex)
	}
	// Fill in the addresses now that the index is known.
	for i := range l.Nodes {
		l.Nodes[i] = l.newNode(l.Nodes[i].Num)
	}
	used, err := rootPrefixesInUse()
	if err != nil {
		return nil, err
	}
	for _, p := range used {
		if p.Overlaps(l.Underlay()) {
			return nil, fmt.Errorf("subnet %s for lab %q is already in use in the root netns (%s)", l.Underlay(), l.Name, p)
		}
	}
	if err := l.Save(); err != nil {
		return nil, err
	}
	return l.ensureBridge()
}

// ensureBPFMount mounts one bpffs for the lab; each agent pins under bpf/<node>.
func (l *Lab) ensureBPFMount() error {
	dir := l.BPFMount()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bpf dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", dir, err)
	}
	return nil
}
