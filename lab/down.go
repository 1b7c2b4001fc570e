package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/internal/nlsafe"
)

// Down removes everything a lab made: processes, pins, netns, links, routes,
// mounts and the lab directory. It works on a lab that a crash left half
// built; name is used when lab.json is missing ("" = DeriveName(dir)).
func Down(ctx context.Context, dir, name string, warn func(string)) error {
	dir = filepath.Clean(dir)
	l, err := Load(dir)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			warn(err.Error())
		}
		if name == "" {
			name = DeriveName(dir)
		}
		l = &Lab{Dir: dir, Name: name}
	}
	if err := ValidName(l.Name); err != nil {
		return err
	}
	if _, err := os.Stat(dir); err == nil {
		unlock, err := lockFile(filepath.Join(dir, "lock"))
		if err != nil {
			return err
		}
		defer unlock()
	}
	var errs []error
	prefix := l.Name + "-"

	// 1. Processes: everything inside the lab's netns, and its agents and
	// servers by command line (their netns may be gone already).
	netnsNames := listNetNS(prefix)
	inodes := map[uint64]bool{}
	for _, n := range netnsNames {
		if ino := netnsInode(netnsPath(n)); ino != 0 {
			inodes[ino] = true
		}
	}
	l.stopRelay()
	stopPIDs(labProcesses(inodes, dir), 5*time.Second)

	// 2. Datapath pins and attachments, per node.
	agentBin, binErr := sibling("loupe-agent")
	nodeDirs, _ := os.ReadDir(l.BPFMount())
	for _, d := range nodeDirs {
		if !d.IsDir() {
			continue
		}
		root := filepath.Join(l.BPFMount(), d.Name())
		if binErr != nil {
			warn(fmt.Sprintf("cannot run loupe-agent cleanup for %s: %v", d.Name(), binErr))
			continue
		}
		// Every path explicit: the defaults are a real node's.
		args := []string{"cleanup", "--bpf-root", root, "--state-dir", l.NodeStateDir(d.Name()), "--socket", l.AgentSocket(d.Name())}
		var cmd *exec.Cmd
		if netnsMounted(netnsPath(d.Name())) {
			cmd = exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsPath(d.Name()), "--", agentBin}, args...)...)
		} else {
			cmd = exec.CommandContext(ctx, agentBin, args...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("loupe-agent cleanup %s: %w: %s", d.Name(), err, strings.TrimSpace(string(out))))
		}
	}

	// 3. Namespaces: pods first, then nodes (their veths go with them).
	sort.Slice(netnsNames, func(i, j int) bool {
		return strings.Contains(netnsNames[i], ".") && !strings.Contains(netnsNames[j], ".")
	})
	for _, n := range netnsNames {
		if err := deleteNetNS(n); err != nil {
			errs = append(errs, err)
		}
	}

	// 4. Links in the root netns: the bridge (its routes go with it) and node veths.
	links, err := nlsafe.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, lk := range links {
		if strings.HasPrefix(lk.Attrs().Name, prefix) {
			// A node's veth may vanish with its netns meanwhile.
			if err := netlink.LinkDel(lk); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete link %s: %w", lk.Attrs().Name, err))
			}
		}
	}

	// 5. Mounts under the lab dir (the bpffs), deepest first.
	for _, m := range mountsUnder(dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
		}
	}

	// 6. State. Keep going on errors above: a second down finishes the job.
	if len(errs) == 0 {
		if err := removeDirContents(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

func unescapeMount(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

// removeDirContents removes the lab dir, or its contents when it is not ours
// to remove (a test's temp dir removes itself).
func removeDirContents(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove lab dir: %w", err)
	}
	for _, e := range entries {
		if e.Name() == "lock" {
			continue
		}
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("remove lab dir: %w", err)
		}
	}
	if dir == DefaultDir {
		_ = os.Remove(filepath.Join(dir, "lock"))
		_ = os.Remove(dir)
	}
	return nil
}
