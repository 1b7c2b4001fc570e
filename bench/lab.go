package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/loupe-project/loupe/cni"
	"github.com/loupe-project/loupe/lab"
)

// benchNS is the Kubernetes namespace of the harness's lab pods.
const benchNS = "bench"

// labManifest: a client and a server on node 1, a server on node 2.
func labManifest(node1, node2 string) string {
	pod := func(name, node string) string {
		return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {app: %s}}
spec:
  nodeName: %s
  containers:
  - name: main
    ports:
    - {containerPort: 80, protocol: TCP}
`, name, benchNS, name, node)
	}
	return fmt.Sprintf("---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n", benchNS) +
		pod("c1", node1) + pod("s1", node1) + pod("s2", node2) + pod("s3", node1) + policyManifest(policyRules) +
		serviceManifest()
}

// benchService is the ClusterIP Service in front of s1 (its only backend):
// the datapath rows compare reaching s1 through it with reaching s1's IP.
const benchService = "s1svc"

func serviceManifest() string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  selector: {app: s1}
  ports:
  - {name: iperf, port: %d, targetPort: %d, protocol: TCP}
  - {name: rr, port: %d, targetPort: %d, protocol: TCP}
`, benchService, benchNS, iperfPort, iperfPort, rrPort, rrPort)
}

// policyRules is how many ingress rules guard pod s3.
const policyRules = 1000

// policyManifest selects s3 with n ingress rules: n-1 that match other
// sources and ports, and one that lets c1 reach the benchmark ports.
func policyManifest(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: rules%d, namespace: %s}\nspec:\n  podSelector: {matchLabels: {app: s3}}\n  policyTypes: [Ingress]\n  ingress:\n", n, benchNS)
	for i := range n - 1 {
		fmt.Fprintf(&b, "  - from: [{ipBlock: {cidr: 10.250.%d.%d/32}}]\n    ports: [{protocol: TCP, port: %d}]\n", i/256, i%256, 10000+i)
	}
	fmt.Fprintf(&b, "  - from: [{podSelector: {matchLabels: {app: c1}}}]\n    ports: [{protocol: TCP, port: %d}, {protocol: TCP, port: %d}, {protocol: TCP, port: %d}]\n", iperfPort, rrPort, eventsPort)
	return b.String()
}

// benchLab is the harness's own lab.
type benchLab struct {
	cfg  *Config
	lab  *lab.Lab
	pods map[string]labPod
	// serviceIP is benchService's ClusterIP.
	serviceIP string
}

// labPod is a lab pod as the datapath benchmarks need it.
type labPod struct {
	Name        string
	IP          string
	Netns       string // path
	Node        lab.Node
	ContainerID string
	HostIf      string // host veth in the node netns
	BPFRoot     string // the node agent's bpf root
}

// upLab tears down what an earlier, killed run left, then brings up a
// 2-node lab with three pods. The caller must call down, even on error.
func upLab(ctx context.Context, cfg *Config) (*benchLab, error) {
	downLab(cfg)
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	node := func(n int) string { return cfg.LabName + "-node" + fmt.Sprint(n) }
	mf := filepath.Join(cfg.OutDir, "lab.yaml")
	if err := os.WriteFile(mf, []byte(labManifest(node(1), node(2))), 0o644); err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	start := time.Now()
	if _, err := run(ctx, filepath.Join(cfg.BinDir, "loupe"), "lab", "up", "--lab-dir", cfg.LabDir, "--name", cfg.LabName, "--nodes", "2", "-f", mf); err != nil {
		return nil, fmt.Errorf("lab up: %w", err)
	}
	l, err := lab.Load(cfg.LabDir)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	cfg.Log.Info("lab up", "dir", cfg.LabDir, "name", l.Name, "took", time.Since(start).Round(time.Millisecond))
	bl := &benchLab{cfg: cfg, lab: l, pods: map[string]labPod{}}
	st, err := l.Status(ctx)
	if err != nil {
		return bl, fmt.Errorf("lab status: %w", err)
	}
	for _, s := range st.Services {
		if s.Namespace == benchNS && s.Name == benchService {
			bl.serviceIP = s.ClusterIP
		}
	}
	if bl.serviceIP == "" {
		return bl, fmt.Errorf("lab: Service %s/%s has no ClusterIP", benchNS, benchService)
	}
	for _, name := range []string{"c1", "s1", "s2", "s3"} {
		p, err := bl.readPod(name)
		if err != nil {
			return bl, err
		}
		bl.pods[name] = p
	}
	return bl, nil
}

func (b *benchLab) readPod(name string) (labPod, error) {
	raw, err := os.ReadFile(filepath.Join(b.lab.PodsDir(), benchNS+"."+name+".json"))
	if err != nil {
		return labPod{}, fmt.Errorf("lab pod %s: %w", name, err)
	}
	var rec struct {
		Node        string `json:"node"`
		NetNS       string `json:"netns"`
		ContainerID string `json:"containerID"`
		IP          string `json:"ip"`
	}
	if err := json.Unmarshal(raw, &rec); err != nil {
		return labPod{}, fmt.Errorf("lab pod %s: %w", name, err)
	}
	n, ok := b.lab.Node(rec.Node)
	if !ok || rec.IP == "" {
		return labPod{}, fmt.Errorf("lab pod %s: incomplete record %s", name, raw)
	}
	return labPod{
		Name: name, IP: rec.IP, Netns: netnsPath(rec.NetNS), Node: n, ContainerID: rec.ContainerID,
		HostIf: cni.HostIfname(rec.ContainerID, "eth0"), BPFRoot: b.lab.NodeBPFRoot(n.Name),
	}, nil
}

// downLab removes the harness's lab (a no-op when there is none).
func downLab(cfg *Config) {
	if _, err := os.Stat(cfg.LabDir); os.IsNotExist(err) {
		// A lab dir removed by hand can still leave netns behind; Down finds them by name.
		if len(listNetnsPrefix(cfg.LabName+"-")) == 0 {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The CLI finds loupe-agent next to itself for the agents' cleanup;
	// lab.Down in this process is the fallback when the binary is missing.
	if _, err := run(ctx, filepath.Join(cfg.BinDir, "loupe"), "lab", "down", "--lab-dir", cfg.LabDir, "--name", cfg.LabName); err == nil {
		// Down keeps the directory and its lock file; nothing else is left.
		_ = os.Remove(filepath.Join(cfg.LabDir, "lock"))
		_ = os.Remove(cfg.LabDir)
		return
	} else {
		cfg.Log.Warn("lab down through the CLI failed; trying in process", "err", err)
	}
	err := lab.Down(ctx, cfg.LabDir, cfg.LabName, func(s string) { cfg.Log.Warn("lab down", "msg", s) })
	if err != nil {
		cfg.Log.Error("lab down", "err", err)
	}
}

func listNetnsPrefix(prefix string) []string {
	entries, _ := os.ReadDir("/run/netns")
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			out = append(out, e.Name())
		}
	}
	return out
}
