package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"

	"github.com/loupe-project/loupe/cni"
)

func TestInstallCNIWritesPluginAndConflistAtomically(t *testing.T) {
	src := filepath.Join(t.TempDir(), "loupe-cni")
	payload := []byte("#!/bin/true\nnot really a plugin\n")
	if err := os.WriteFile(src, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	bin, conf := t.TempDir(), filepath.Join(t.TempDir(), "net.d") // conf dir does not exist yet
	cmd := newRootCommand()
	cmd.SetArgs([]string{"install-cni", "--cni-binary", src, "--cni-bin-dir", bin, "--cni-conf-dir", conf,
		"--xdp", "generic", "--mtu", "1450"})
	cmd.SetOut(io.Discard)
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(bin, "loupe-cni"))
	if err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("plugin: %q %v", got, err)
	}
	if st, _ := os.Stat(filepath.Join(bin, "loupe-cni")); st.Mode().Perm() != 0o755 {
		t.Errorf("plugin mode %v", st.Mode())
	}
	list, err := libcni.ConfListFromFile(filepath.Join(conf, DefaultConflistName))
	if err != nil {
		t.Fatal(err)
	}
	if list.CNIVersion != "1.0.0" || list.Name != DefaultNetworkName || len(list.Plugins) != 1 {
		t.Fatalf("conflist: version %s name %s plugins %d", list.CNIVersion, list.Name, len(list.Plugins))
	}
	nc, err := cni.ParseNetConf(pluginConf(t, list))
	if err != nil {
		t.Fatalf("loupe-cni would reject its netconf: %v", err)
	}
	if nc.Type != "loupe-cni" || nc.MTU != 1450 || nc.XDP != "generic" || nc.AgentSocket != cni.DefaultAgentSocket {
		t.Errorf("netconf %+v", nc)
	}
	for _, d := range []string{bin, conf} {
		ents, _ := os.ReadDir(d)
		if len(ents) != 1 {
			t.Errorf("%s holds %d files (temporary files left?)", d, len(ents))
		}
	}

	// cleanup removes this conflist, and leaves one of another plugin.
	other := filepath.Join(conf, "10-bridge.conflist")
	if err := os.WriteFile(other, []byte(`{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := removeConflist(other, cni.DefaultAgentSocket); err == nil {
		t.Error("removed another plugin's conflist")
	}
	// Cleaning up another agent (a lab's, with its own socket) keeps it.
	if err := removeConflist(filepath.Join(conf, DefaultConflistName), "/tmp/lab/n1/agent.sock"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, DefaultConflistName)); err != nil {
		t.Fatalf("another agent's cleanup removed the node's conflist: %v", err)
	}
	if err := removeConflist(filepath.Join(conf, DefaultConflistName), cni.DefaultAgentSocket); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(conf, DefaultConflistName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("conflist still there: %v", err)
	}
	if err := removeConflist(filepath.Join(conf, DefaultConflistName), cni.DefaultAgentSocket); err != nil {
		t.Errorf("removing a missing conflist: %v", err)
	}
}

func TestInstallCNIRejectsBadSettingsBeforeWriting(t *testing.T) {
	bin, conf := t.TempDir(), t.TempDir()
	o := installCNIOptions{binDir: bin, confDir: conf, conflistName: DefaultConflistName, networkName: "loupe",
		source: "/nonexistent", agentSocket: cni.DefaultAgentSocket, mtu: 10}
	if _, _, err := installCNI(o); err == nil {
		t.Fatal("mtu 10 accepted")
	}
	o.mtu = 1500
	if _, _, err := installCNI(o); err == nil {
		t.Fatal("a missing plugin binary was accepted")
	}
	for _, d := range []string{bin, conf} {
		if ents, _ := os.ReadDir(d); len(ents) != 0 {
			t.Errorf("%s: %d files written on failure", d, len(ents))
		}
	}
}

func TestUseKubernetes(t *testing.T) {
	t.Setenv("KUBERNETES_SERVICE_HOST", "") // not in a pod
	for _, c := range []struct {
		kubeconfig, dir string
		want, err       bool
	}{
		{"", "", false, false},
		{"/k", "", true, false},
		{"", "/m", false, false},
		{"/k", "/m", false, true},
	} {
		got, err := useKubernetes(c.kubeconfig, c.dir)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("%q %q: got %v %v", c.kubeconfig, c.dir, got, err)
		}
	}
}

func TestWaitPodCIDRsRetriesUntilTheNodeHasOne(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/24")}
	calls := 0
	got, err := waitPodCIDRs(context.Background(), func(context.Context) ([]netip.Prefix, error) {
		calls++
		if calls < 3 {
			return nil, errors.New("no podCIDR yet")
		}
		return want, nil
	}, time.Minute, time.Millisecond, slog.New(slog.DiscardHandler))
	if err != nil || !slices.Equal(got, want) || calls != 3 {
		t.Fatalf("got %v %v after %d calls", got, err, calls)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := waitPodCIDRs(ctx, func(context.Context) ([]netip.Prefix, error) {
		return nil, errors.New("never")
	}, time.Minute, time.Millisecond, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("no error after the context ended")
	}
}

// pluginConf is the netconf a runtime hands the conflist's plugin: its
// entry plus the list's cniVersion and name.
func pluginConf(t *testing.T, list *libcni.NetworkConfigList) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(list.Plugins[0].Bytes, &m); err != nil {
		t.Fatal(err)
	}
	m["cniVersion"], m["name"] = list.CNIVersion, list.Name
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
