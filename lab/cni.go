package lab

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/loupe-project/loupe/cni/cniclient"
)

const (
	cniNetworkName = "loupe-lab"
	cniIfName      = "eth0"
)

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

// cniFor returns a CNI client that runs loupe-cni inside node n's netns, as
// a container runtime on that node would; the plugin shares our mount
// namespace, so it sees the agent's bpffs pins and /run/netns.
func (l *Lab) cniFor(n Node) (*cniclient.Client, error) {
	dir, err := binDir()
	if err != nil {
		return nil, err
	}
	if _, err := sibling("loupe-cni"); err != nil {
		return nil, err
	}
	b, err := json.Marshal(l.cniConf(l.AgentSocket(n.Name)))
	if err != nil {
		return nil, fmt.Errorf("encode cni config: %w", err)
	}
	return cniclient.New(n.NetNSPath(), []string{dir}, b, cniclient.Options{CacheDir: l.CNICacheDir(), Stderr: io.Discard})
}

func attachment(containerID, netnsPath, namespace, name string) cniclient.Attachment {
	return cniclient.Attachment{ContainerID: containerID, Netns: netnsPath, IfName: cniIfName, PodNamespace: namespace, PodName: name}
}

// cniAdd plumbs a pod netns into node n and returns its IPv4 address.
func (l *Lab) cniAdd(ctx context.Context, n Node, containerID, netnsPath, namespace, name string) (string, error) {
	c, err := l.cniFor(n)
	if err != nil {
		return "", err
	}
	r, err := c.Add(ctx, attachment(containerID, netnsPath, namespace, name))
	if err != nil {
		return "", fmt.Errorf("cni add %s/%s: %w", namespace, name, err)
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
	c, err := l.cniFor(n)
	if err != nil {
		return err
	}
	if err := c.Del(ctx, attachment(containerID, netnsPath, namespace, name)); err != nil {
		return fmt.Errorf("cni del %s/%s: %w", namespace, name, err)
	}
	return nil
}
