package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loupe-project/loupe/datapath"
	"github.com/loupe-project/loupe/secevents"
)

// secevExecs is the exec-heavy load: this many execs of /bin/true from one
// shell loop, with a shell that reads /etc/shadow every secevMatchEvery, so
// that some events match a default rule.
const (
	secevExecs      = 10000
	secevMatchEvery = 100
	secevExecTarget = 0.95
	// secevFileOps is the file-operation load: this many rounds of create,
	// rename, chmod and unlink, each a syscall the tracepoints see.
	secevFileOps      = 20000
	secevFileOpTarget = 0.80
)

// runSecurityEvents measures what the runtime-security tracepoints cost
// and filter: the exec-heavy load with and without them (the agent's own
// loader, filter from the default rules, and a reader running the rule
// engine), the rule engine's events/s on one core against decoding alone,
// and the events the in-kernel filter kept in the kernel against those it
// sent.
func runSecurityEvents(ctx context.Context, cfg *Config) ([]Row, error) {
	rules, err := secevents.Compile([]secevents.Source{secevents.DefaultRules()}, nil)
	if err != nil {
		return nil, err
	}
	execs := pick(cfg, secevExecs, secevExecs/10, secevExecs/50)
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do /bin/true; i=$((i+1)); if [ $((i %% %d)) -eq 0 ]; then sh -c 'cat /etc/shadow >/dev/null'; fi; done`, execs, secevMatchEvery)
	load := func() (float64, error) {
		start := time.Now()
		if out, err := exec.CommandContext(ctx, "sh", "-c", script).CombinedOutput(); err != nil {
			return 0, fmt.Errorf("exec load: %v: %s", err, out)
		}
		return float64(execs) / time.Since(start).Seconds(), nil
	}
	fileLoad, cleanup, err := fileOpLoad(pick(cfg, secevFileOps, secevFileOps/4, secevFileOps/20))
	if err != nil {
		return nil, err
	}
	defer cleanup()
	var with, without, filtered, sent, fwith, fwithout []float64
	for r := range cfg.rounds() {
		base, err := load()
		if err != nil {
			return nil, err
		}
		fbase, err := fileLoad()
		if err != nil {
			return nil, err
		}
		k, err := datapath.LoadSecurityEvents(datapath.SecurityEventsConfig{Filter: rules.KernelFilter()})
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithCancel(ctx)
		en := secevents.NewEngine(rules)
		done := make(chan error, 1)
		go func() {
			done <- k.Read(rctx, func(raw []byte) {
				if rec, err := datapath.DecodeSecurityRecord(raw); err == nil {
					en.Match(benchEvent(rec))
				}
			})
		}()
		on, lerr := load()
		fon, ferr := fileLoad()
		if lerr == nil {
			lerr = ferr
		}
		time.Sleep(100 * time.Millisecond) // the reader drains
		st, serr := k.Stats()
		cancel()
		<-done
		k.Close()
		if lerr != nil {
			return nil, lerr
		}
		if serr != nil {
			return nil, serr
		}
		with, without = append(with, on), append(without, base)
		fwith, fwithout = append(fwith, fon), append(fwithout, fbase)
		filtered, sent = append(filtered, float64(st.Filtered)), append(sent, float64(max(st.Sent, 1)))
		cfg.Log.Info("security events", "round", r+1, "execs_per_s", fmt.Sprintf("%.0f", on), "without", fmt.Sprintf("%.0f", base),
			"fileops_per_s", fmt.Sprintf("%.0f", fon), "fileops_without", fmt.Sprintf("%.0f", fbase),
			"filtered", st.Filtered, "sent", st.Sent, "limited", st.Limited)
	}
	rows := []Row{}
	row, err := NewRow("secevents_exec_rate", "execs/s", with, without, "no tracepoints", secevExecTarget, Higher,
		fmt.Sprintf("%d execs of /bin/true in a shell loop (and a shell reading /etc/shadow every %d), with the runtime-security tracepoints (default rules' filter, engine reading the ring) vs none, alternating in each round", execs, secevMatchEvery))
	if err != nil {
		return nil, err
	}
	rows = append(rows, row)
	row, err = NewRow("secevents_fileop_rate", "ops/s", fwith, fwithout, "no tracepoints", secevFileOpTarget, Higher,
		"file operations relative to a dirfd 6 levels deep (each resolved by a dentry walk) on paths no default rule names: openat(O_CREAT), renameat, fchmodat, unlinkat in a loop, with the runtime-security tracepoints (default rules' filter: the setuid rule sends every chmod to the engine) vs none, alternating in each round")
	if err != nil {
		return nil, err
	}
	rows = append(rows, row)
	row, err = NewRow("secevents_kernel_filtered", "events", filtered, sent, "sent to the agent", 10, Higher,
		"kernel events the in-kernel filter kept in the kernel (no default rule could match them) against those it sent, over the exec load")
	if err != nil {
		return nil, err
	}
	rows = append(rows, row)
	rate, base := engineRate(rules, pick(cfg, 300*time.Millisecond, 200*time.Millisecond, 50*time.Millisecond), cfg.rounds())
	row, err = NewRow("secevents_engine_rate", "events/s/core", rate, base, "decode only", 0.05, Higher,
		"decode + attribution-free event building + the default rules, one core, in process, vs decoding the same records without rules")
	if err != nil {
		return nil, err
	}
	return append(rows, row), nil
}

// benchEvent builds the rule engine's event from a record, as the agent
// does for a process in a pod.
func benchEvent(rec datapath.SecurityRecord) *secevents.Event {
	ev := secevents.FromRecord(rec)
	ev.Num, ev.ContainerID, ev.Namespace, ev.Pod = 1, "bench", "bench", "bench"
	return ev
}

// engineRate runs a mix of records (execs of shells and other programs,
// opens of sensitive and ordinary files) through decode + rules, and
// through decode alone, on one core, for d per round.
func engineRate(rules *secevents.Rules, d time.Duration, rounds int) (withRules, decodeOnly []float64) {
	var recs [][]byte
	for i, name := range []string{"sh", "true", "cat", "apt-get", "ls", "bash", "python3", "make"} {
		recs = append(recs, datapath.EncodeSecurityRecord(datapath.SecurityRecord{Type: datapath.SecevExec, PID: uint32(i), Comm: name,
			Path: "/usr/bin/" + name, Argv: []string{name, "-c", "echo hello world"}}))
	}
	for _, f := range []string{"/etc/shadow", "/etc/hostname", "/usr/bin/x", "/etc/sudoers.d/a", "/tmp/a", "/etc/passwd"} {
		recs = append(recs, datapath.EncodeSecurityRecord(datapath.SecurityRecord{Type: datapath.SecevOpen, Comm: "cat", Path: f,
			Argv: []string{"cat", f}, Ret: 3}))
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	en := secevents.NewEngine(rules)
	run := func(match bool) float64 {
		n := 0
		start := time.Now()
		for time.Since(start) < d {
			for range 1000 {
				rec, err := datapath.DecodeSecurityRecord(recs[n%len(recs)])
				if err != nil {
					return 0
				}
				ev := benchEvent(rec)
				if match {
					en.Match(ev)
				}
				n++
			}
		}
		return float64(n) / time.Since(start).Seconds()
	}
	for range rounds {
		withRules = append(withRules, run(true))
		decodeOnly = append(decodeOnly, run(false))
	}
	return withRules, decodeOnly
}

// fileOpLoad returns a load of n rounds of openat(O_CREAT)+close,
// renameat, fchmodat and unlinkat on paths relative to a directory six
// levels below a temporary one, and its ops/s (four syscalls a round).
func fileOpLoad(n int) (load func() (float64, error), cleanup func(), err error) {
	tmp, err := os.MkdirTemp("", "loupe-bench-fileops-")
	if err != nil {
		return nil, nil, err
	}
	dir := filepath.Join(tmp, "a", "b", "c", "d", "e")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	dfd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, nil, err
	}
	cleanup = func() { unix.Close(dfd); os.RemoveAll(tmp) }
	load = func() (float64, error) {
		start := time.Now()
		for range n {
			fd, err := unix.Openat(dfd, "f", unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC, 0o644)
			if err != nil {
				return 0, fmt.Errorf("file load: %w", err)
			}
			unix.Close(fd)
			if err := unix.Renameat(dfd, "f", dfd, "g"); err != nil {
				return 0, fmt.Errorf("file load: %w", err)
			}
			if err := unix.Fchmodat(dfd, "g", 0o600, 0); err != nil {
				return 0, fmt.Errorf("file load: %w", err)
			}
			if err := unix.Unlinkat(dfd, "g", 0); err != nil {
				return 0, fmt.Errorf("file load: %w", err)
			}
		}
		return float64(4*n) / time.Since(start).Seconds(), nil
	}
	return load, cleanup, nil
}
