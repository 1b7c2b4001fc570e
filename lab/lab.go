package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"github.com/loupe-project/loupe/contract"
	"golang.org/x/sys/unix"
)

const (
	// DefaultDir is where the default lab keeps its state.
	DefaultDir = "/run/loupe-lab"
	// DefaultName prefixes the default lab's netns and link names.
	DefaultName = "loupe"
	// ObserverPort is where each agent serves the Observer API on its node address.
	ObserverPort = contract.ObserverPort
	// MetricsPort is where each agent serves Prometheus metrics on its node address.
	MetricsPort = 9962
	maxIndex    = 99
	maxNodes    = 200
)

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9]{0,7}$`)

// Lab is the persisted description of one lab (lab.json).
type Lab struct {
	Dir   string `json:"-"`
	Name  string `json:"name"`
	Index int    `json:"index"`
	// XDPMode is passed to every agent and to the CNI config ("" = the agent's default).
	XDPMode string `json:"xdpMode,omitempty"`
	// FlowBufferSize is every agent's --flow-buffer-size (0 = the agent's default).
	FlowBufferSize int `json:"flowBufferSize,omitempty"`
	// RulesDir is every agent's --rules-dir (security rules; "" = none).
	RulesDir     string `json:"rulesDir,omitempty"`
	Nodes        []Node `json:"nodes"`
	RelayAddress string `json:"relayAddress,omitempty"`
	UIURL        string `json:"uiURL,omitempty"`
}

// Node is one node of the lab.
type Node struct {
	Num     int    `json:"num"`
	Name    string `json:"name"` // also the netns name
	IP      string `json:"ip"`
	PodCIDR string `json:"podCIDR"`
}

// ValidName reports whether name can prefix the lab's netns and link names
// (links are limited to 15 bytes).
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: want 1-8 lowercase letters or digits, starting with a letter", name)
	}
	return nil
}

// DeriveName gives a lab directory other than the default its own stable name.
func DeriveName(dir string) string {
	if filepath.Clean(dir) == DefaultDir {
		return DefaultName
	}
	h := fnv.New32a()
	h.Write([]byte(filepath.Clean(dir)))
	return fmt.Sprintf("l%06x", h.Sum32()&0xffffff)
}

// BridgeName is the underlay bridge in the root netns.
func (l *Lab) BridgeName() string { return l.Name + "-br" }

// HostVeth is node num's veth in the root netns.
func (l *Lab) HostVeth(num int) string { return l.Name + "-n" + strconv.Itoa(num) }

// NodeName is node num's name and netns name.
func (l *Lab) NodeName(num int) string { return l.Name + "-node" + strconv.Itoa(num) }

// BridgeIP is the root netns address on the underlay.
func (l *Lab) BridgeIP() netip.Addr { return netip.AddrFrom4([4]byte{172, 30, byte(l.Index), 1}) }

// Underlay is the underlay subnet.
func (l *Lab) Underlay() netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 30, byte(l.Index), 0}), 24)
}

// NodeIP is node num's underlay address.
func (l *Lab) NodeIP(num int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 30, byte(l.Index), byte(10 + num)})
}

// PodCIDR is node num's pod CIDR.
func (l *Lab) PodCIDR(num int) netip.Prefix {
	second := byte(244)
	if l.Index > 0 {
		second = byte(100 + l.Index)
	}
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, second, byte(num), 0}), 24)
}

// PodNetNS is the netns name of a pod. Namespace names cannot hold a dot, so
// the name is unambiguous; very long names are hashed to stay a valid file name.
func (l *Lab) PodNetNS(namespace, name string) string {
	s := l.Name + "-" + namespace + "." + name
	if len(s) > 200 {
		h := fnv.New64a()
		h.Write([]byte(namespace + "/" + name))
		s = fmt.Sprintf("%s-%s.%s-%016x", l.Name, namespace, name[:100], h.Sum64())
	}
	return s
}

// newNode describes node num.
func (l *Lab) newNode(num int) Node {
	return Node{Num: num, Name: l.NodeName(num), IP: l.NodeIP(num).String(), PodCIDR: l.PodCIDR(num).String()}
}

// Paths inside the lab directory.
func (l *Lab) path(elem ...string) string {
	return filepath.Join(append([]string{l.Dir}, elem...)...)
}
func (l *Lab) StatePath() string           { return l.path("lab.json") }
func (l *Lab) ManifestsDir() string        { return l.path("manifests") }
func (l *Lab) BPFMount() string            { return l.path("bpf") }
func (l *Lab) NodeBPFRoot(n string) string { return l.path("bpf", n) }
func (l *Lab) NodeDir(n string) string     { return l.path("nodes", n) }
func (l *Lab) NodeStateDir(n string) string {
	return l.path("nodes", n, "state")
}
func (l *Lab) AgentSocket(n string) string { return l.path("nodes", n, "agent.sock") }
func (l *Lab) AgentLog(n string) string    { return l.path("nodes", n, "agent.log") }
func (l *Lab) AgentPIDFile(n string) string {
	return l.path("nodes", n, "agent.pid")
}
func (l *Lab) CNIDir() string      { return l.path("cni") }
func (l *Lab) CNIConfList() string { return l.path("cni", "loupe.conflist") }
func (l *Lab) CNICacheDir() string { return l.path("cni", "cache") }
func (l *Lab) PodsDir() string     { return l.path("pods") }
func (l *Lab) podFile(namespace, name, ext string) string {
	return l.path("pods", namespace+"."+name+ext)
}

// ObserverAddress is where node n's agent serves the Observer API.
func (n Node) ObserverAddress() string {
	return netip.AddrPortFrom(netip.MustParseAddr(n.IP), ObserverPort).String()
}

// MetricsAddress is where node n's agent serves /metrics.
func (n Node) MetricsAddress() string {
	return netip.AddrPortFrom(netip.MustParseAddr(n.IP), MetricsPort).String()
}

// NetNSPath is the node's netns bind mount.
func (n Node) NetNSPath() string { return netnsPath(n.Name) }

func netnsPath(name string) string { return filepath.Join(netnsDir, name) }

const netnsDir = "/run/netns"

// Load reads lab.json from dir.
func Load(dir string) (*Lab, error) {
	b, err := os.ReadFile(filepath.Join(dir, "lab.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no lab in %s: run `loupe lab up` first: %w", dir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read lab state: %w", err)
	}
	l := &Lab{}
	if err := json.Unmarshal(b, l); err != nil {
		return nil, fmt.Errorf("parse %s: %w", filepath.Join(dir, "lab.json"), err)
	}
	l.Dir = dir
	return l, nil
}

// Save writes lab.json atomically.
func (l *Lab) Save() error {
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return fmt.Errorf("encode lab state: %w", err)
	}
	return writeFileAtomic(l.StatePath(), append(b, '\n'), 0o644)
}

// Node returns the node called name.
func (l *Lab) Node(name string) (Node, bool) {
	for _, n := range l.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return Node{}, false
}

// writeFileAtomic writes through a temporary file and a rename, so a reader
// (the agents' folder watcher) never sees half a file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// lockFile takes an exclusive flock on path, creating it. The returned func releases it.
func lockFile(path string) (func(), error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
