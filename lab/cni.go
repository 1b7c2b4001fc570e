package lab

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

const (
	cniNetworkName = "loupe-lab"
	cniIfName      = "eth0"
)

// nodeExec runs CNI plugins inside a node's netns, as a container runtime on
// that node would; the plugin shares our mount namespace, so it sees the
// agent's bpffs pins and /run/netns.
type nodeExec struct {
	netns string
}

func (e nodeExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.CommandContext(ctx, "nsenter", "--net="+e.netns, "--", pluginPath)
	c.Env = environ
	c.Stdin = bytes.NewReader(stdin)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		perr := &types.Error{}
		if stdout.Len() > 0 && json.Unmarshal(stdout.Bytes(), perr) == nil && perr.Msg != "" {
			return nil, perr
		}
		return nil, fmt.Errorf("%s: %w: %s", filepath.Base(pluginPath), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

func (e nodeExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (e nodeExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// writeCNIConfig writes the conflist every node's runtime would hold. The
// agent socket differs per node, so it is filled in per call (see cniList).
func (l *Lab) writeCNIConfig() error {
	if err := os.MkdirAll(l.CNICacheDir(), 0o755); err != nil {
		return fmt.Errorf("cni dir: %w", err)
	}
	b, err := json.MarshalIndent(l.cniConf(""), "", "  ")
	if err != nil {
		return fmt.Errorf("encode cni config: %w", err)
	}
	return writeFileAtomic(l.CNIConfList(), append(b, '\n'), 0o644)
}

func (l *Lab) cniConf(socket string) map[string]any {
	plugin := map[string]any{
		"type":    "loupe-cni",
		"mtu":     1500,
		"logFile": filepath.Join(l.CNIDir(), "loupe-cni.log"),
	}
	if socket != "" {
		plugin["agentSocket"] = socket
	}
	if l.XDPMode != "" {
		plugin["xdp"] = l.XDPMode
	}
	return map[string]any{"cniVersion": "1.0.0", "name": cniNetworkName, "plugins": []any{plugin}}
}

// cniFor returns libcni set up to run loupe-cni for node n.
func (l *Lab) cniFor(n Node) (*libcni.CNIConfig, *libcni.NetworkConfigList, error) {
	dir, err := binDir()
	if err != nil {
		return nil, nil, err
	}
	if _, err := sibling("loupe-cni"); err != nil {
		return nil, nil, err
	}
	b, err := json.Marshal(l.cniConf(l.AgentSocket(n.Name)))
	if err != nil {
		return nil, nil, fmt.Errorf("encode cni config: %w", err)
	}
	list, err := libcni.NetworkConfFromBytes(b)
	if err != nil {
		return nil, nil, fmt.Errorf("cni config: %w", err)
	}
	return libcni.NewCNIConfigWithCacheDir([]string{dir}, l.CNICacheDir(), nodeExec{netns: n.NetNSPath()}), list, nil
}

func runtimeConf(containerID, netnsPath, namespace, name string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: containerID,
		NetNS:       netnsPath,
		IfName:      cniIfName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", namespace},
			{"K8S_POD_NAME", name},
			{"K8S_POD_INFRA_CONTAINER_ID", containerID},
		},
	}
}

// cniAdd plumbs a pod netns into node n and returns its IPv4 address.
func (l *Lab) cniAdd(ctx context.Context, n Node, containerID, netnsPath, namespace, name string) (string, error) {
	cfg, list, err := l.cniFor(n)
	if err != nil {
		return "", err
	}
	res, err := cfg.AddNetworkList(ctx, list, runtimeConf(containerID, netnsPath, namespace, name))
	if err != nil {
		return "", fmt.Errorf("cni add %s/%s: %w", namespace, name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return "", fmt.Errorf("cni add %s/%s: result: %w", namespace, name, err)
	}
	for _, ip := range r.IPs {
		if v4 := ip.Address.IP.To4(); v4 != nil {
			return v4.String(), nil
		}
	}
	return "", fmt.Errorf("cni add %s/%s: no IPv4 address in result", namespace, name)
}

// cniDel undoes cniAdd; it is idempotent like the plugin's DEL.
func (l *Lab) cniDel(ctx context.Context, n Node, containerID, netnsPath, namespace, name string) error {
	cfg, list, err := l.cniFor(n)
	if err != nil {
		return err
	}
	if err := cfg.DelNetworkList(ctx, list, runtimeConf(containerID, netnsPath, namespace, name)); err != nil {
		return fmt.Errorf("cni del %s/%s: %w", namespace, name, err)
	}
	return nil
}
