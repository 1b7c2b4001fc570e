package cni_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/loupe-project/loupe/cni/cniclient"
)

// The built plugin, run by libcni, reports configuration and availability
// errors with the CNI codes runtimes act on. No root needed: these fail
// before touching a netns.
func TestPluginErrorCodes(t *testing.T) {
	bin := buildBinary(t, "loupe-cni")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	att := cniclient.Attachment{ContainerID: "c1", Netns: "/proc/self/ns/net", IfName: "eth0", PodNamespace: "ns", PodName: "p"}
	conflist := func(extra string) []byte {
		return []byte(fmt.Sprintf(`{"cniVersion":"1.1.0","name":"loupe","plugins":[{"type":"loupe-cni","agentSocket":%q%s}]}`, sock, extra))
	}
	tests := []struct {
		name  string
		extra string
		code  uint
		msg   string
	}{
		{"mtu", `,"mtu":100`, types.ErrInvalidNetworkConfig, "mtu: must be between 576 and 65535"},
		{"xdp", `,"xdp":"turbo"`, types.ErrInvalidNetworkConfig, "xdp: must be one of"},
		{"mtu type", `,"mtu":"big"`, types.ErrInvalidNetworkConfig, "mtu: must be a number"},
		{"agent unreachable", `,"agentWaitSeconds":0`, types.ErrTryAgainLater, sock},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := cniclient.New("", []string{bin}, conflist(tt.extra), cniclient.Options{CacheDir: t.TempDir(), Stderr: &lockedBuffer{}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Add(context.Background(), att)
			if cniclient.Code(err) != tt.code || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("ADD: want code %d with %q, got %v", tt.code, tt.msg, err)
			}
		})
	}
	c, err := cniclient.New("", []string{bin}, conflist(""), cniclient.Options{CacheDir: t.TempDir(), Stderr: &lockedBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Status(context.Background()); cniclient.Code(err) != types.ErrPluginNotAvailable {
		t.Fatalf("STATUS: want 50, got %v", err)
	}
	info, err := c.Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(info.SupportedVersions(), ","); got != "0.4.0,1.0.0,1.1.0" {
		t.Fatalf("VERSION: %s", got)
	}
	old := []byte(fmt.Sprintf(`{"cniVersion":"0.3.1","name":"loupe","plugins":[{"type":"loupe-cni","agentSocket":%q}]}`, sock))
	c, err = cniclient.New("", []string{bin}, old, cniclient.Options{CacheDir: t.TempDir(), Stderr: &lockedBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Add(context.Background(), att); cniclient.Code(err) != types.ErrIncompatibleCNIVersion {
		t.Fatalf("ADD with cniVersion 0.3.1: want 1, got %v", err)
	}
}
