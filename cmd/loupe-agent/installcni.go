package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/spf13/cobra"

	"github.com/loupe-project/loupe/cni"
)

// Defaults of install-cni; the conflist sorts early so the runtime picks
// it over others left in the folder.
const (
	DefaultCNIBinDir    = "/opt/cni/bin"
	DefaultCNIConfDir   = "/etc/cni/net.d"
	DefaultConflistName = "05-loupe.conflist"
	DefaultNetworkName  = "loupe"
	// conflistCNIVersion is the newest version containerd 1.6 speaks.
	conflistCNIVersion = "1.0.0"
)

type installCNIOptions struct {
	binDir, confDir, conflistName, networkName string
	source                                     string // loupe-cni to copy; "" = next to this executable
	agentSocket, xdp, logFile, logLevel        string
	mtu                                        int
}

func newInstallCNICommand() *cobra.Command {
	var o installCNIOptions
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "install loupe-cni and its conflist on the node (the DaemonSet's init container)",
		Long: `install-cni copies loupe-cni into --cni-bin-dir and writes the network
configuration list (cniVersion ` + conflistCNIVersion + `) into --cni-conf-dir. Both are written
to a temporary file in the same folder and renamed into place, so the
container runtime never reads a half-written plugin or config.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bin, conf, err := installCNI(o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s and %s\n", bin, conf)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.binDir, "cni-bin-dir", DefaultCNIBinDir, "folder the container runtime runs CNI plugins from")
	f.StringVar(&o.confDir, "cni-conf-dir", DefaultCNIConfDir, "folder the container runtime reads CNI configs from")
	f.StringVar(&o.conflistName, "conflist-name", DefaultConflistName, "file name of the conflist")
	f.StringVar(&o.networkName, "network-name", DefaultNetworkName, "CNI network name")
	f.StringVar(&o.source, "cni-binary", "", "loupe-cni binary to install (default: loupe-cni next to this executable)")
	f.StringVar(&o.agentSocket, "agent-socket", cni.DefaultAgentSocket, "the agent's endpoint API socket as loupe-cni sees it on the node")
	f.IntVar(&o.mtu, "mtu", cni.DefaultMTU, "MTU of the pods' veth pairs")
	f.StringVar(&o.xdp, "xdp", "", `XDP mode of the pods' host veths: native, generic or off ("" = the agent's default)`)
	f.StringVar(&o.logFile, "cni-log-file", "", `loupe-cni's log file on the node ("" = stderr, which the runtime logs)`)
	f.StringVar(&o.logLevel, "cni-log-level", "", `loupe-cni's log level ("" = info)`)
	return cmd
}

// conflist builds and validates the network configuration list.
func (o installCNIOptions) conflist() ([]byte, error) {
	plugin := map[string]any{"type": "loupe-cni", "agentSocket": o.agentSocket, "mtu": o.mtu}
	for k, v := range map[string]string{"xdp": o.xdp, "logFile": o.logFile, "logLevel": o.logLevel} {
		if v != "" {
			plugin[k] = v
		}
	}
	list := map[string]any{"cniVersion": conflistCNIVersion, "name": o.networkName, "plugins": []any{plugin}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("install-cni: encode conflist: %w", err)
	}
	if _, err := libcni.ConfListFromBytes(b); err != nil {
		return nil, fmt.Errorf("install-cni: conflist: %w", err)
	}
	// Check the plugin's netconf the way loupe-cni will parse it: the
	// runtime adds cniVersion and name to each plugin's config.
	pc := map[string]any{"cniVersion": conflistCNIVersion, "name": o.networkName}
	for k, v := range plugin {
		pc[k] = v
	}
	pb, err := json.Marshal(pc)
	if err != nil {
		return nil, fmt.Errorf("install-cni: encode netconf: %w", err)
	}
	if _, err := cni.ParseNetConf(pb); err != nil {
		return nil, fmt.Errorf("install-cni: netconf: %w", err)
	}
	return append(b, '\n'), nil
}

func installCNI(o installCNIOptions) (binPath, confPath string, err error) {
	conf, err := o.conflist()
	if err != nil {
		return "", "", err
	}
	src := o.source
	if src == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", "", fmt.Errorf("install-cni: %w", err)
		}
		src = filepath.Join(filepath.Dir(exe), "loupe-cni")
	}
	in, err := os.Open(src)
	if err != nil {
		return "", "", fmt.Errorf("install-cni: %w", err)
	}
	defer in.Close()
	binPath = filepath.Join(o.binDir, "loupe-cni")
	confPath = filepath.Join(o.confDir, o.conflistName)
	// The binary goes first: a conflist naming a missing plugin fails pods.
	if err := writeAtomic(binPath, in, 0o755); err != nil {
		return "", "", err
	}
	if err := writeAtomic(confPath, strings.NewReader(string(conf)), 0o644); err != nil {
		return "", "", err
	}
	return binPath, confPath, nil
}

// writeAtomic writes r to a temporary file next to path, syncs it and
// renames it over path.
func writeAtomic(path string, r io.Reader, mode os.FileMode) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err := io.Copy(tmp, r); err != nil {
		return fmt.Errorf("install-cni: write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("install-cni: %w", err)
	}
	return nil
}

// removeConflist deletes a conflist written by install-cni for the agent
// at socket, and nothing else: a file whose plugins are not loupe-cni, or
// that points at another agent's socket (a lab's agent cleaned up on the
// same machine), is left alone.
func removeConflist(path, socket string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove conflist: %w", err)
	}
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		return fmt.Errorf("remove conflist %s: not a conflist, left alone: %w", path, err)
	}
	for _, p := range list.Plugins {
		if p.Network.Type != "loupe-cni" {
			return fmt.Errorf("remove conflist %s: plugin %q is not loupe-cni, left alone", path, p.Network.Type)
		}
		var nc struct {
			AgentSocket string `json:"agentSocket"`
		}
		if err := json.Unmarshal(p.Bytes, &nc); err != nil {
			return fmt.Errorf("remove conflist %s: %w", path, err)
		}
		if nc.AgentSocket == "" {
			nc.AgentSocket = cni.DefaultAgentSocket
		}
		if filepath.Clean(nc.AgentSocket) != filepath.Clean(socket) {
			return nil // another agent's network
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove conflist: %w", err)
	}
	return nil
}
