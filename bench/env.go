package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Config is what one harness run needs.
type Config struct {
	Quick bool
	// Smoke runs every benchmark as briefly as it can still produce a
	// figure: for the harness's own test, not for reading.
	Smoke bool
	// Profile takes a CPU profile of the events suite's agent (agent-profile.txt).
	Profile bool
	// CompareAgent is another loupe-agent binary the events suite measures
	// against this tree's, rounds interleaved ("" = none).
	CompareAgent string
	Root         string // repository root (holds go.mod)
	BinDir       string // loupe, loupe-agent, loupe-cni
	PlugDir      string // ptp, host-local
	OutDir       string // summary.json, logs, compiled test binaries
	LabDir       string
	LabName      string
	// Suites to run (datapath, cni, decode, relay, events); empty = all.
	Suites []string
	Log    *slog.Logger
	// Stderr receives the progress of child commands worth showing.
	Stderr io.Writer
}

// rounds is how many rounds each benchmark runs.
func (c *Config) rounds() int {
	switch {
	case c.Smoke:
		return 2
	case c.Quick:
		return 3
	}
	return 5
}

// pick returns full, quick or smoke by the run's level.
func pick[T any](c *Config, full, quick, smoke T) T {
	switch {
	case c.Smoke:
		return smoke
	case c.Quick:
		return quick
	}
	return full
}

func (c *Config) want(suite string) bool {
	if len(c.Suites) == 0 {
		return true
	}
	for _, s := range c.Suites {
		if s == suite {
			return true
		}
	}
	return false
}

// run runs a command and returns its stdout; stderr goes into the error.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	setPdeath(cmd)
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %v: %w: %s", name, args, err, tailStr(errb.String(), 2000))
	}
	return out.String(), nil
}

// setPdeath gives a child its own process group, so that a cancel ends its
// children too. (No Pdeathsig: it fires when the forking OS thread exits,
// and inNetns ends threads. Children that outlive a killed harness run in
// the lab's netns, and lab down, which every run starts with, kills them.)
func setPdeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// inNetns runs f on a fresh OS thread that joined the netns at path; the
// thread is thrown away afterwards. Sockets f opens stay in that netns.
func inNetns(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", path, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", path, err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// addNetns creates a named netns with loopback up.
func addNetns(ctx context.Context, name string) error {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	if _, err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("netns %s: %w", name, err)
	}
	return nil
}

func delNetns(name string) {
	if _, err := os.Stat(netnsPath(name)); err == nil {
		_, _ = run(context.Background(), "ip", "netns", "del", name)
	}
}

// runIn is run with a working directory.
func runIn(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	setPdeath(cmd)
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %v: %w: %s%s", name, args, err, tailStr(errb.String(), 2000), tailStr(out.String(), 1000))
	}
	return out.String(), nil
}
