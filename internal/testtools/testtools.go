// Package testtools finds the external binaries that loupe's tests run
// against: the stock Hubble CLI and Hubble Relay (built by
// test/tools/build.sh) and the Kubernetes binaries (built by
// test/k8s/build-k8s.sh). Both scripts cache by version; a missing binary
// skips the test, or fails it when LOUPE_REQUIRE_TOOLS=1 (as make test sets),
// so that CI never passes by skipping.
package testtools

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const ciliumModule = "github.com/cilium/cilium"

// KubernetesVersion is the version test/k8s/build-k8s.sh builds by default.
const KubernetesVersion = "v1.34.4"

// CiliumVersion is the cilium module version in loupe's go.mod, which
// test/tools/build.sh keys its cache by. (A test binary's build info lists
// no dependencies, so it cannot answer this.)
func CiliumVersion(t testing.TB) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", ciliumModule).Output()
	if err != nil {
		t.Fatalf("go list -m %s: %v", ciliumModule, err)
	}
	return strings.TrimSpace(string(out))
}

// Hubble returns the cached stock Hubble binary name ("hubble" or
// "hubble-relay") of that version.
func Hubble(t testing.TB, name string) string {
	t.Helper()
	dir := filepath.Join(cacheRoot("LOUPE_TOOLS_CACHE", "loupe-tools"), "cilium-"+CiliumVersion(t))
	return require(t, filepath.Join(dir, name), "test/tools/build.sh")
}

// KubernetesDir is where test/k8s/build-k8s.sh caches the binaries of
// KubernetesVersion (LOUPE_K8S_BIN overrides it).
func KubernetesDir() string {
	if d := os.Getenv("LOUPE_K8S_BIN"); d != "" {
		return d
	}
	return filepath.Join(cacheRoot("LOUPE_K8S_CACHE", "loupe-k8s"), "kubernetes-"+KubernetesVersion)
}

// Kubernetes returns a cached Kubernetes binary ("kube-apiserver", ...).
func Kubernetes(t testing.TB, name string) string {
	t.Helper()
	return require(t, filepath.Join(KubernetesDir(), name), "test/k8s/build-k8s.sh")
}

// OnPath returns a program from the PATH that scripts/install-deps.sh
// installs from Debian's package pkg.
func OnPath(t testing.TB, name, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return require(t, name, "apt-get install "+pkg)
}

func cacheRoot(env, sub string) string {
	if root := os.Getenv(env); root != "" {
		return root
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", sub)
}

func require(t testing.TB, bin, script string) string {
	t.Helper()
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin
	}
	msg := bin + " is not built: run " + script
	if os.Getenv("LOUPE_REQUIRE_TOOLS") == "1" {
		t.Fatal(msg + " (LOUPE_REQUIRE_TOOLS=1)")
	}
	t.Skip(msg + ", or set LOUPE_REQUIRE_TOOLS=1 to make this a failure")
	return ""
}
