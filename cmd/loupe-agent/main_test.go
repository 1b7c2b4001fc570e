package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	observerpb "github.com/cilium/cilium/api/v1/observer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loupe-project/loupe/agent/daemon"
	"github.com/loupe-project/loupe/observer"
	"github.com/loupe-project/loupe/observer/hubblemetrics"
	"github.com/loupe-project/loupe/relay/relaytest"
)

func TestPodCIDRFlagRepeatedOrCommaSeparated(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd01::/64")}
	for _, args := range [][]string{
		{"--pod-cidr", "10.1.0.0/24,fd01::/64"},
		{"--pod-cidr", "10.1.0.0/24", "--pod-cidr", "fd01::/64"},
	} {
		cmd := newRootCommand()
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		raw, err := cmd.Flags().GetStringSlice("pod-cidr")
		if err != nil {
			t.Fatal(err)
		}
		got, err := parseCIDRs(raw)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%v: got %v %v", args, got, err)
		}
	}
	if _, err := parseCIDRs([]string{"10.1.0.0"}); err == nil {
		t.Fatal("a CIDR without a length was accepted")
	}
}

func TestTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca, err := relaytest.NewCA("ca")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Issue("node1", "node1.default.hubble-grpc.cilium.io")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := pair.WriteFiles(dir, "node1")
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newRootCommand()
	if err := cmd.ParseFlags([]string{"--tls-cert-file", cert, "--tls-key-file", key, "--tls-client-ca-file", caFile}); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"tls-cert-file": cert, "tls-key-file": key, "tls-client-ca-file": caFile} {
		if got, _ := cmd.Flags().GetString(flag); got != want {
			t.Errorf("--%s = %q", flag, got)
		}
	}
	good := observer.TLSConfig{CertFile: cert, KeyFile: key, ClientCAFile: caFile}
	if l, err := observerListen(":4244", "", good); err != nil || l != ":4244" {
		t.Fatalf("--listen with the three --tls-* flags: %q, %v", l, err)
	}
	if l, err := observerListen("", "", observer.TLSConfig{}); err != nil || l != "" {
		t.Fatalf("no flags: %q, %v; want the unix socket only", l, err)
	}
	if l, err := observerListen("", "10.0.0.1:4244", observer.TLSConfig{}); err != nil || l != "10.0.0.1:4244" {
		t.Fatalf("--insecure-listen: %q, %v", l, err)
	}
	for name, c := range map[string]struct {
		listen, insecure string
		tls              observer.TLSConfig
		want             string
	}{
		"listen without tls":       {":4244", "", observer.TLSConfig{}, "needs --tls-cert-file, --tls-key-file and --tls-client-ca-file"},
		"listen without client ca": {":4244", "", observer.TLSConfig{CertFile: cert, KeyFile: key}, "--insecure-listen :4244"},
		"both listeners":           {":4244", ":4245", good, "exclude each other"},
		"insecure with tls":        {"", ":4244", good, "go with --listen"},
		"tls without listen":       {"", "", good, "give it with --listen"},
	} {
		if _, err := observerListen(c.listen, c.insecure, c.tls); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error containing %q, got %v", name, c.want, err)
		}
	}
	for name, c := range map[string]observer.TLSConfig{
		"missing key file": {CertFile: cert, KeyFile: filepath.Join(dir, "nope.key")},
		"key without cert": {KeyFile: key},
		"key of the CA":    {CertFile: cert, KeyFile: key, ClientCAFile: key},
	} {
		if _, err := observerListen(":4244", "", c); err == nil || !strings.Contains(err.Error(), "--tls-") {
			t.Errorf("%s: want an error naming the --tls- flags, got %v", name, err)
		}
	}
	// The observer the daemon gets serves with these files: GetNodes (here
	// over the plain local socket) says TLS is on, with Hubble's name.
	obs, err := observerFactory(good, nil, nil, nil)(daemon.ObserverParams{NodeName: "node1"})
	if err != nil {
		t.Fatalf("observer: %v", err)
	}
	sock := filepath.Join(dir, "observer.sock")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- obs.Serve(ctx, "", sock) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var nodes *observerpb.GetNodesResponse
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if nodes, err = observerpb.NewObserverClient(conn).GetNodes(ctx, &observerpb.GetNodesRequest{}); err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	if tl := nodes.GetNodes()[0].GetTls(); !tl.GetEnabled() || tl.GetServerName() != "node1.default.hubble-grpc.cilium.io" {
		t.Fatalf("GetNodes TLS %v", tl)
	}
}

// A --metrics value the agent cannot read stops it before it touches the
// node, naming the flag and what is wrong.
func TestMetricsFlagBadValueFailsAtStart(t *testing.T) {
	for _, c := range []struct{ value, want string }{
		{"flow drop tcpp", `--metrics: metric "tcpp" does not exist`},
		{"drop:sourceContext=nodes", `--metrics: metric "drop": sourceContext "nodes"`},
		{"httpV2:exemplars=true", `--metrics: metric "httpV2": is Hubble's second HTTP family`},
	} {
		cmd := newRootCommand()
		cmd.SetArgs([]string{"--node-name", "n1", "--pod-cidr", "10.1.0.0/24", "--state-dir", t.TempDir(), "--metrics", c.value})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--metrics %q: got %v, want %q", c.value, err, c.want)
		}
	}
	if f := newRootCommand().Flags().Lookup("metrics"); f == nil || f.DefValue != hubblemetrics.Default {
		t.Errorf("--metrics default %v, want %q", f, hubblemetrics.Default)
	}
}

// A bad --otlp-* flag stops the agent at start, before it touches the
// node, with the flag's name in the error.
func TestOTLPFlagsCheckedAtStart(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--otlp-endpoint", "http://collector:4317"}, "--otlp-endpoint"},
		{[]string{"--otlp-endpoint", "collector:4317", "--otlp-flows", "some"}, "--otlp-flows"},
		{[]string{"--otlp-insecure"}, "--otlp-endpoint"},
		{[]string{"--otlp-endpoint", "collector:4317", "--otlp-ca-file", "/nonexistent/ca.pem"}, "--otlp-ca-file"},
	} {
		cmd := newRootCommand()
		cmd.SetArgs(append([]string{"--node-name", "n1", "--pod-cidr", "10.1.0.0/24", "--state-dir", t.TempDir(),
			"--bpf-root", "/nonexistent/bpf"}, c.args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.args, err, c.want)
		}
	}
}
