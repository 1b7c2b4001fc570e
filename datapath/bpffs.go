package datapath

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// systemBPFFS is never unmounted by Cleanup.
const systemBPFFS = "/sys/fs/bpf"

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", path, err)
	}
	return uint32(st.Type) == unix.BPF_FS_MAGIC, nil
}

// ensureBPFFS creates dir and mounts a bpffs on it unless it already is one.
func ensureBPFFS(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create bpf root: %w", err)
	}
	ok, err := isBPFFS(dir)
	if err != nil || ok {
		return err
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return nil
}

// requireBPFFS fails unless dir is a bpffs: the CNI side never mounts one,
// since a fresh mount would hide the agent's pins.
func requireBPFFS(dir string) error {
	ok, err := isBPFFS(dir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%s is not a bpffs (is the agent running?)", dir)
	}
	return nil
}

// lockRoot takes a flock on the bpf root directory, serialising the agent's
// re-pin and link update against loupe-cni's attach and detach.
func lockRoot(root string, exclusive bool) (func(), error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open bpf root: %w", err)
	}
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err = unix.Flock(fd, how)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("lock bpf root: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// isMountPoint reports whether dir is the root of a mount.
func isMountPoint(dir string) (bool, error) {
	var st, parent unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return false, err
	}
	if err := unix.Stat(filepath.Dir(filepath.Clean(dir)), &parent); err != nil {
		return false, err
	}
	return st.Dev != parent.Dev, nil
}

func removeIfEmpty(dir string) {
	entries, err := os.ReadDir(dir)
	if err == nil && len(entries) == 0 {
		_ = os.Remove(dir)
	}
}

// linkAlive reports whether a TCX or XDP link is still bound to a device.
// The kernel keeps a link whose device went away, with ifindex 0.
func linkAlive(l link.Link) bool {
	info, err := l.Info()
	if err != nil {
		return false
	}
	return linkIfindex(info) != 0
}

func linkIfindex(info *link.Info) uint32 {
	if t := info.TCX(); t != nil {
		return t.Ifindex
	}
	if x := info.XDP(); x != nil {
		return x.Ifindex
	}
	return 0
}
