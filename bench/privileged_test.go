package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestPrivilegedBenchQuick runs every suite of the harness at its smoke
// level in a lab of its own, and checks the summary it writes. It judges no
// figure: shared machines are too noisy to gate on.
func TestPrivilegedBenchQuick(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if testing.Short() {
		t.Skip("runs the whole harness")
	}
	for _, tool := range []string{"iperf3", "nsenter", "ip", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed: %v (make deps installs it)", tool, err)
		}
	}
	cfg := privilegedConfig(t, "lbt")
	cfg.Quick = true
	cfg.PlugDir = filepath.Join(t.TempDir(), "plugins")
	if out, err := exec.Command(filepath.Join(cfg.Root, "bench", "plugins.sh"), cfg.PlugDir).CombinedOutput(); err != nil {
		t.Fatalf("build reference plugins: %v\n%s", err, out)
	}
	// Run tears its lab down itself; this covers a panic on the way.
	t.Cleanup(func() { downLab(cfg) })

	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	rows, err := Run(ctx, cfg)
	if err != nil {
		t.Errorf("harness: %v", err)
	}
	path, err := WriteSummary(cfg.OutDir, rows)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateSummary(b, Headline); err != nil {
		t.Fatalf("summary: %v\n%s", err, b)
	}
	if left := listNetnsPrefix(cfg.LabName + "-"); len(left) > 0 {
		t.Errorf("netns left after the run: %v", left)
	}
}

// privilegedConfig is a smoke-level Config with a lab of its own (name
// prefix plus a random suffix) under a temporary directory; it builds the
// binaries unless LOUPE_BIN has them.
func privilegedConfig(t *testing.T, prefix string) *Config {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	binDir := os.Getenv("LOUPE_BIN")
	if binDir == "" {
		binDir = filepath.Join(tmp, "bin")
		goCmd(t, root, "build", "-o", binDir+"/", "./cmd/...")
	}
	suffix := make([]byte, 2)
	_, _ = rand.Read(suffix)
	return &Config{
		Smoke: true, Root: root, BinDir: binDir,
		OutDir: filepath.Join(tmp, "out"), LabDir: filepath.Join(tmp, "lab"),
		LabName: prefix + hex.EncodeToString(suffix),
		Log:     slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
}

func goCmd(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", args, err, out)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
