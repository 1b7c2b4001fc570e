package certs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loupe certs --out-dir writes the five pairs; a second run refuses to
// overwrite them without --force; one of --out-dir and --kubernetes is
// required.
func TestCommandOutDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	run := func(args ...string) (string, error) {
		cmd := NewCommand()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		err := cmd.Execute()
		return out.String(), err
	}
	if out, err := run("--out-dir", dir); err != nil || !strings.Contains(out, "wrote ca, agent, relay, relay-client and client") {
		t.Fatalf("%v: %s", err, out)
	}
	first, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if _, err := run("--out-dir", dir); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second run: %v, want a refusal naming --force", err)
	}
	if _, err := run("--out-dir", dir, "--force"); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); bytes.Equal(first, again) {
		t.Error("--force kept the old CA")
	}
	for _, args := range [][]string{{}, {"--out-dir", dir, "--kubernetes"}} {
		if _, err := run(args...); err == nil || !strings.Contains(err.Error(), "exactly one of --out-dir DIR and --kubernetes") {
			t.Errorf("%v: %v", args, err)
		}
	}
}
