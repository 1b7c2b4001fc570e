package lab

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// binDir is where the loupe binaries live: next to the running executable.
func binDir() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own executable: %w", err)
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe), nil
}

// sibling finds a loupe binary next to the running executable.
func sibling(name string) (string, error) {
	dir, err := binDir()
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found next to %s (build every binary into one bin/ directory): %w", name, dir, err)
	}
	return p, nil
}

// detached describes a process started in a netns, in its own session, that
// outlives the lab command.
type detached struct {
	netns   string // netns path ("" = this process's)
	argv    []string
	logFile string
	pidFile string
	extra   []*os.File
}

// start runs the process through `nsenter --net=` (not `ip netns exec`, which
// would give it a private mount namespace and hide bpffs pins). The returned
// channel is closed when the process exits while we still watch it.
func (d detached) start() (*os.Process, <-chan struct{}, error) {
	logf, err := os.OpenFile(d.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(d.argv[0], d.argv[1:]...) // no netns: the root netns, like this process
	if d.netns != "" {
		cmd = exec.Command("nsenter", append([]string{"--net=" + d.netns, "--"}, d.argv...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = d.extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", filepath.Base(d.argv[0]), err)
	}
	if err := writeFileAtomic(d.pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, nil, err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	return cmd.Process, done, nil
}

// cmdline returns a process's arguments (nil if it is gone).
func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}

// parentPID reads the parent of pid from /proc, 0 if unknown.
func parentPID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	// After the command name: state, then ppid.
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	pp, _ := strconv.Atoi(f[1])
	return pp
}

// ancestors is this process and every process above it.
func ancestors() map[int]bool {
	out := map[int]bool{}
	for pid := os.Getpid(); pid > 1 && !out[pid]; pid = parentPID(pid) {
		out[pid] = true
	}
	return out
}

// isZombie reports whether pid has exited but not been reaped.
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// pidFromFile returns the pid in file if that process is alive and its
// command line holds marker, so a recycled pid is never mistaken for ours.
func pidFromFile(file, marker string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	if !hasArg(cmdline(pid), marker) || isZombie(pid) {
		return 0
	}
	return pid
}

func hasArg(args []string, marker string) bool {
	for _, a := range args {
		if a == marker {
			return true
		}
	}
	return false
}

// stopPIDs sends SIGTERM, waits up to grace for the processes to go, then
// SIGKILLs the rest.
func stopPIDs(pids []int, grace time.Duration) {
	if len(pids) == 0 {
		return
	}
	for _, p := range pids {
		_ = unix.Kill(p, unix.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		alive := false
		for _, p := range pids {
			if processAlive(p) {
				alive = true
				break
			}
		}
		if !alive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range pids {
		if processAlive(p) {
			_ = unix.Kill(p, unix.SIGKILL)
		}
	}
	// Wait for the kernel to tear them down, so their netns and links go too.
	deadline = time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		alive := false
		for _, p := range pids {
			if processAlive(p) {
				alive = true
			}
		}
		if !alive {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func processAlive(pid int) bool {
	if err := unix.Kill(pid, 0); err != nil {
		return false
	}
	return !isZombie(pid)
}

// labProcesses finds every process that belongs to a lab: those inside one of
// the given netns (by inode) and those whose command line names the lab dir
// (agents and pod servers whose netns is already gone). It skips this
// process and its ancestors: a Go program that ran code in a lab netns on a
// locked thread can leave its main thread there (the runtime never exits the
// main thread), and the program that called down must not be stopped by it.
func labProcesses(netnsInodes map[uint64]bool, dirMarker string) []int {
	entries, _ := os.ReadDir("/proc")
	skip := ancestors()
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || skip[pid] || pid == 1 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && netnsInodes[st.Ino] {
			out = append(out, pid)
			continue
		}
		args := cmdline(pid)
		if len(args) == 0 {
			continue
		}
		ours := false
		for _, a := range args {
			if a == dirMarker || strings.HasPrefix(a, dirMarker+"/") || strings.HasSuffix(a, "="+dirMarker) || strings.Contains(a, "="+dirMarker+"/") {
				ours = true
				break
			}
		}
		if !ours {
			continue
		}
		// Only the lab's daemons: agents, pod servers and nsenter wrappers.
		base := filepath.Base(args[0])
		if base == "loupe-agent" || base == "nsenter" || (len(args) > 2 && args[1] == "lab" && args[2] == "serve") {
			out = append(out, pid)
		}
	}
	return out
}

// tail returns the last n bytes of a file, for error messages.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		_, _ = f.Seek(-n, io.SeekEnd)
	}
	b, _ := io.ReadAll(f)
	return strings.TrimSpace(string(b))
}

var errExited = errors.New("process exited")
