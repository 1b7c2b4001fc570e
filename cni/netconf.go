package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// Defaults for the fields a netconf may leave out.
const (
	DefaultAgentSocket = "/run/loupe/agent.sock"
	DefaultMTU         = 1500
	MinMTU             = 576
	MaxMTU             = 65535
	// DefaultAgentWaitSeconds is how long ADD waits for an agent that is
	// not up yet (a node booting, the DaemonSet rolling), as Cilium's CNI
	// waits for its agent, rather than fail and leave the runtime to back
	// off; MaxAgentWaitSeconds stays well inside kubelet's 2-minute
	// runtime request timeout.
	DefaultAgentWaitSeconds = 30
	MaxAgentWaitSeconds     = 90

	// LogEnv overrides the netconf's logFile; "-" or "stderr" means stderr.
	LogEnv = "LOUPE_CNI_LOG"
)

// SupportedVersions are the CNI spec versions loupe-cni speaks: 0.4.0 is
// the oldest with CHECK, and containerd 1.6 speaks up to 1.0.0.
var SupportedVersions = []string{"0.4.0", "1.0.0", "1.1.0"}

// NetConf is loupe-cni's network configuration, as found in a conflist's
// plugins list:
//
//	{"type":"loupe-cni","agentSocket":"/run/loupe/agent.sock","mtu":1500,"xdp":"native"}
type NetConf struct {
	types.PluginConf

	// AgentSocket is the unix socket of the node's loupe-agent endpoint API.
	AgentSocket string `json:"agentSocket,omitempty"`
	// MTU of both ends of the veth pair.
	MTU int `json:"mtu,omitempty"`
	// XDP is the XDP mode for the host veth ("native", "generic", "off");
	// empty means the agent's default.
	XDP string `json:"xdp,omitempty"`
	// LogFile receives the plugin's logs; empty means stderr.
	LogFile string `json:"logFile,omitempty"`
	// LogLevel is debug, info, warn or error; empty means info.
	LogLevel string `json:"logLevel,omitempty"`
	// AgentWaitSeconds bounds how long ADD waits for the agent to be ready
	// (DefaultAgentWaitSeconds when absent; 0 fails at once with 11).
	AgentWaitSeconds int `json:"agentWaitSeconds"`
}

// rawNetConf distinguishes absent fields from zero values, so that
// "mtu":0 is reported instead of silently defaulted.
type rawNetConf struct {
	types.PluginConf
	AgentSocket *string `json:"agentSocket"`
	MTU         *int    `json:"mtu"`
	XDP         *string `json:"xdp"`
	LogFile     *string `json:"logFile"`
	LogLevel    *string `json:"logLevel"`
	AgentWait   *int    `json:"agentWaitSeconds"`
}

// ParseNetConf decodes and validates a netconf. Its errors are *types.Error:
// code 6 when the bytes are not a JSON object, code 1 for an unsupported
// cniVersion, and code 7 for a field with a bad value, naming the field.
// It does not parse prevResult; CHECK does that itself.
func ParseNetConf(b []byte) (*NetConf, error) {
	var raw rawNetConf
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if field == "" {
				return nil, invalidConf("netconf: must be a JSON object, not %s", te.Value)
			}
			return nil, invalidConf("%s: must be a %s, not %s", field, jsonKind(te.Type.String()), te.Value)
		}
		return nil, types.NewError(types.ErrDecodingFailure, "netconf: "+err.Error(), "")
	}
	if dec.More() {
		return nil, types.NewError(types.ErrDecodingFailure, "netconf: trailing data after the JSON object", "")
	}

	c := &NetConf{PluginConf: raw.PluginConf}
	if c.CNIVersion == "" {
		return nil, invalidConf("cniVersion: required")
	}
	if !versionSupported(c.CNIVersion) {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion,
			fmt.Sprintf("cniVersion: %q is not supported; loupe-cni supports %s", c.CNIVersion, strings.Join(SupportedVersions, ", ")), "")
	}
	if c.Name == "" {
		return nil, invalidConf("name: required")
	}
	if c.Type == "" {
		return nil, invalidConf("type: required")
	}

	c.AgentSocket = DefaultAgentSocket
	if raw.AgentSocket != nil {
		s := *raw.AgentSocket
		switch {
		case s == "":
			return nil, invalidConf("agentSocket: must not be empty")
		case !filepath.IsAbs(s):
			return nil, invalidConf("agentSocket: must be an absolute path, got %q", s)
		case len(s) > 107: // sun_path holds 108 bytes with the NUL
			return nil, invalidConf("agentSocket: path longer than 107 bytes")
		}
		c.AgentSocket = filepath.Clean(s)
	}

	c.MTU = DefaultMTU
	if raw.MTU != nil {
		if *raw.MTU < MinMTU || *raw.MTU > MaxMTU {
			return nil, invalidConf("mtu: must be between %d and %d, got %d", MinMTU, MaxMTU, *raw.MTU)
		}
		c.MTU = *raw.MTU
	}

	c.AgentWaitSeconds = DefaultAgentWaitSeconds
	if raw.AgentWait != nil {
		if *raw.AgentWait < 0 || *raw.AgentWait > MaxAgentWaitSeconds {
			return nil, invalidConf("agentWaitSeconds: must be between 0 and %d, got %d", MaxAgentWaitSeconds, *raw.AgentWait)
		}
		c.AgentWaitSeconds = *raw.AgentWait
	}

	if raw.XDP != nil {
		switch *raw.XDP {
		case "native", "generic", "off":
			c.XDP = *raw.XDP
		default:
			return nil, invalidConf("xdp: must be one of native, generic, off, got %q", *raw.XDP)
		}
	}

	if raw.LogFile != nil {
		if *raw.LogFile != "" && !filepath.IsAbs(*raw.LogFile) {
			return nil, invalidConf("logFile: must be an absolute path, got %q", *raw.LogFile)
		}
		c.LogFile = *raw.LogFile
	}
	if raw.LogLevel != nil {
		switch *raw.LogLevel {
		case "debug", "info", "warn", "error":
			c.LogLevel = *raw.LogLevel
		default:
			return nil, invalidConf("logLevel: must be one of debug, info, warn, error, got %q", *raw.LogLevel)
		}
	}

	for i, a := range c.ValidAttachments {
		if a.ContainerID == "" || a.IfName == "" {
			return nil, invalidConf("cni.dev/valid-attachments[%d]: containerID and ifname are required", i)
		}
	}
	return c, nil
}

func invalidConf(format string, a ...any) *types.Error {
	return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
}

// jsonKind names a Go type the way a netconf author thinks of it.
func jsonKind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "*int"):
		return "number"
	case strings.HasPrefix(goType, "bool"), strings.HasPrefix(goType, "*bool"):
		return "boolean"
	case strings.HasPrefix(goType, "[]"):
		return "list"
	case strings.HasPrefix(goType, "map"), strings.HasPrefix(goType, "struct"), strings.HasPrefix(goType, "types."):
		return "object"
	default:
		return "string"
	}
}

func versionSupported(v string) bool {
	for _, s := range SupportedVersions {
		if s == v {
			return true
		}
	}
	return false
}

// PluginVersions is what VERSION reports.
func PluginVersions() version.PluginInfo {
	return version.PluginSupports(SupportedVersions...)
}

// K8sArgs are the CNI_ARGS kubelet passes. Unknown keys (K8S_POD_UID,
// K8S_POD_INFRA_CONTAINER_ID, ...) are ignored.
type K8sArgs struct {
	types.CommonArgs
	K8S_POD_NAMESPACE types.UnmarshallableString //nolint:revive // names are the wire keys
	K8S_POD_NAME      types.UnmarshallableString //nolint:revive
}

// ParseK8sArgs parses CNI_ARGS ("K=V;K2=V2"). A malformed string is error 6.
func ParseK8sArgs(s string) (K8sArgs, error) {
	var a K8sArgs
	a.IgnoreUnknown = true
	if err := types.LoadArgs(s, &a); err != nil {
		return K8sArgs{}, types.NewError(types.ErrDecodingFailure, "CNI_ARGS: "+err.Error(), "")
	}
	return a, nil
}
